"""lth.report.instability: which rewind points are stable, said per level from constructed
results with known barriers."""

from __future__ import annotations

import json
from pathlib import Path

from lth.analysis import InstabilityResult
from lth.analysis.instability_store import InstabilityProtocol
from lth.report.instability import run_instability, stability_lines, stable_from


def result(level: int, k: int, test_barrier_pct: float, trial: int = 0, weights: float = 1.0) -> InstabilityResult:
    """A three-point path whose test error rises by ``test_barrier_pct`` points in the middle."""
    b = test_barrier_pct / 100
    return InstabilityResult(
        trial=trial, level=level, rewind_iteration=k, iterations=1000, weights_remaining=weights,
        alphas=(0.0, 0.5, 1.0), train_errors=(0.01, 0.01, 0.01), test_errors=(0.1, 0.1 + b, 0.1),
        train_barrier=0.0, test_barrier=b, endpoint_test_accuracy=(0.9, 0.9), train_examples=100,
        bn_recomputed=False, data_seeds=(1, 2), train_seconds=1.0, eval_seconds=0.5,
        protocol=InstabilityProtocol(points=3, train_examples=100))


def write_results(run_dir: Path, results: list[InstabilityResult]) -> None:
    """Result files as ``lth instability`` leaves them (the fields its loader checks)."""
    for r in results:
        folder = run_dir / "instability" / f"trial_{r.trial}" / f"level_{r.level}" / f"k_{r.rewind_iteration}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({**r.to_dict(), "start": {}, "files": {}}))


def test_stable_from_is_the_smallest_k_after_which_every_k_is_below_two_points():
    rs = [result(0, 0, 5.0), result(0, 100, 2.5), result(0, 500, 1.9), result(0, 2000, 0.3),  # from 500
          result(3, 0, 0.5, weights=0.5), result(3, 100, 0.1, weights=0.5),  # at every k
          result(5, 0, 0.5, weights=0.3), result(5, 100, 3.0, weights=0.3)]  # not at the last k
    assert stable_from(rs) == {0: 500, 3: 0, 5: None}
    assert stability_lines(rs) == [
        "the dense network: stable from k = 500 on, not below it (k = 0, 100, 500, 2000 measured)",
        "level 3 (50% of weights): stable at every k measured (k = 0, 100)",
        "level 5 (30% of weights): unstable at k = 100 (test barrier at least 2 points); k = 0, 100 measured"]


def test_the_mean_over_trials_decides_and_exactly_two_points_is_unstable():
    # trials at 1.0 and 2.9 points: the mean, 1.95, is below 2; one trial at exactly 2.0 is not
    assert stable_from([result(0, 0, 1.0, trial=0), result(0, 0, 2.9, trial=1)]) == {0: 0}
    assert stable_from([result(0, 0, 2.0)]) == {0: None}


def test_run_instability_reads_a_run_directorys_results_and_leaves_out_damaged_ones(tmp_path):
    assert run_instability(tmp_path) == ([], [])  # no instability folder: nothing
    write_results(tmp_path, [result(0, 0, 1.0), result(0, 100, 0.5)])
    bad = tmp_path / "instability" / "trial_0" / "level_0" / "k_7" / "result.json"
    bad.parent.mkdir()
    bad.write_text("[]")
    results, damaged = run_instability(tmp_path)
    assert [r.rewind_iteration for r in results] == [0, 100]
    assert len(damaged) == 1 and "k_7" in str(damaged[0])
