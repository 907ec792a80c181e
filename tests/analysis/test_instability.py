"""lth.analysis.instability: the sweep over rewind iterations on the bundled digits data: what
it trains, what it writes, and that rerunning it resumes instead of recomputing."""

from __future__ import annotations

import json

import pytest
import torch

from lth.analysis import (
    COPIES,
    InstabilityResult,
    copy_seeds,
    error_barrier,
    instability,
    load_results,
    theta_ks,
)
from lth.analysis.instability_store import InstabilityDir
from lth.cli import main as lth_main
from lth.config import ConfigError, get_preset, with_section
from lth.experiment import Experiment
from lth.pruning import full_mask
from lth.store import DamagedFileError, RunStore, StoreError, config_from_run


def _cfg(iterations: int = 120, **runtime):
    cfg = with_section(get_preset("digits-quick"), "train", iterations=iterations, eval_every=40)
    return with_section(cfg, "runtime", **runtime) if runtime else cfg


def _sweep(cfg, tmp_path, ks=(0, 30), lines=None, **kw):
    return instability(cfg, 0, ks, root=tmp_path / "runs", points=7, log=(lines.append if lines is not None
                                                                           else None), **kw)


def test_a_sweep_writes_its_results_and_a_rerun_trains_nothing(tmp_path, digits):
    cfg, lines = _cfg(), []
    results = _sweep(cfg, tmp_path, lines=lines, splits=digits)
    out = next((tmp_path / "runs").glob("digits-quick-*")) / "instability"
    assert [r.rewind_iteration for r in results] == [0, 30]
    for r in results:
        d = out / "trial_0" / "level_0" / f"k_{r.rewind_iteration}"
        assert sorted(p.name for p in d.iterdir()) == ["copies.json", "copy_0.pt", "copy_1.pt", "result.json"]
        assert r.level == 0 and r.weights_remaining == 1.0 and r.iterations == 120
        assert len(r.alphas) == len(r.train_errors) == len(r.test_errors) == 7
        assert r.train_barrier == error_barrier(r.train_errors) and r.test_barrier == error_barrier(r.test_errors)
        assert r.endpoint_test_accuracy == (1 - r.test_errors[0], 1 - r.test_errors[-1])
        assert r.train_examples == len(digits.train_y) and not r.bn_recomputed
        assert list(r.data_seeds) == copy_seeds(cfg, 0, 0, r.rewind_iteration)[0] and len(set(r.data_seeds)) == 2
        a, b = (torch.load(d / f"copy_{c}.pt", weights_only=True) for c in range(COPIES))
        assert all(not torch.equal(a[n], b[n]) for n in a)  # different data orders: different weights
        stored = json.loads((d / "result.json").read_text())
        assert InstabilityResult.from_dict({k: v for k, v in stored.items() if k not in ("start", "files")}) == r
    assert lines[-1] == "instability: 4 copies trained, 2 paths evaluated, 0 rewind points already finished"
    assert load_results(out) == results

    again: list[str] = []
    assert _sweep(cfg, tmp_path, lines=again, splits=digits) == results
    assert again[-1] == "instability: 0 copies trained, 0 paths evaluated, 2 rewind points already finished"
    assert not any("training" in line for line in again)


def test_a_new_protocol_reevaluates_the_stored_copies_without_training(tmp_path, digits):
    cfg = _cfg()
    first = _sweep(cfg, tmp_path, ks=(30,), splits=digits)
    lines: list[str] = []
    (more,) = instability(cfg, 0, [30], root=tmp_path / "runs", points=11, splits=digits, log=lines.append)
    assert lines[-1] == "instability: 0 copies trained, 1 paths evaluated, 0 rewind points already finished"
    assert len(more.alphas) == 11 and more.protocol.points == 11
    assert (more.test_errors[0], more.test_errors[-1]) == (first[0].test_errors[0], first[0].test_errors[-1])


def test_a_sweep_killed_while_copies_train_resumes_from_their_checkpoint_to_the_same_weights(
        tmp_path, digits, monkeypatch):
    cfg = _cfg(checkpoint_every=50)
    whole = instability(cfg, 0, [30], root=tmp_path / "whole", points=5, splits=digits, log=None)
    original = InstabilityDir.save_checkpoint

    def save_then_die(self, *args):
        original(self, *args)
        raise KeyboardInterrupt  # stands for a kill right after the first checkpoint

    monkeypatch.setattr(InstabilityDir, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        instability(cfg, 0, [30], root=tmp_path / "cut", points=5, splits=digits, log=None)
    point = next((tmp_path / "cut").glob("*/instability")) / "trial_0" / "level_0" / "k_30"
    assert sorted(p.name for p in point.iterdir()) == ["checkpoint.pt"]  # no result, no copies: nothing lies
    monkeypatch.setattr(InstabilityDir, "save_checkpoint", original)
    lines: list[str] = []
    (resumed,) = instability(cfg, 0, [30], root=tmp_path / "cut", points=5, splits=digits, log=lines.append)
    assert any("from iteration 50 to 120 (resumed from a checkpoint)" in line for line in lines)
    assert not (point / "checkpoint.pt").exists()
    whole_dir = next((tmp_path / "whole").glob("*/instability")) / "trial_0" / "level_0" / "k_30"
    for c in range(COPIES):
        a = torch.load(whole_dir / f"copy_{c}.pt", weights_only=True)
        b = torch.load(point / f"copy_{c}.pt", weights_only=True)
        assert all(torch.equal(a[n], b[n]) for n in a)
    assert resumed.test_errors == whole[0].test_errors


def test_a_damaged_copy_is_retrained_and_a_damaged_result_measured_again(tmp_path, digits):
    cfg = _cfg()
    (first,) = _sweep(cfg, tmp_path, ks=(0,), splits=digits)
    point = next((tmp_path / "runs").glob("*/instability")) / "trial_0" / "level_0" / "k_0"
    (point / "result.json").write_text("{not json")
    (point / "copy_1.pt").write_bytes(b"garbage")
    with pytest.raises(DamagedFileError, match="result.json is not valid JSON"):
        load_results(point.parents[2])
    lines: list[str] = []
    (again,) = _sweep(cfg, tmp_path, ks=(0,), lines=lines, splits=digits)
    assert any("result.json is not valid JSON" in line and "measuring again" in line for line in lines)
    assert lines[-1] == "instability: 1 copies trained, 1 paths evaluated, 0 rewind points already finished"
    assert again.test_errors == first.test_errors  # the same seeds train the same copy again


def test_theta_k_is_the_dense_runs_weights_at_k_and_level_masks_come_from_the_run(tmp_path, digits):
    """A run rewinding to k = 30 stored theta_30 from its dense training; the sweep's own dense
    pass gives the same tensors. Its level-1 copies keep the run's pruned weights at zero."""
    run_dir = tmp_path / "run"
    assert lth_main(["run", "--preset", "digits-quick", "--levels", "1", "--trials", "1", "--iterations", "120",
                     "--eval-every", "40", "--rewind-iteration", "30", "--branches", "ticket", "--quiet",
                     "--run-dir", str(run_dir)]) == 0
    store = RunStore(run_dir)
    cfg = config_from_run(run_dir)
    exp = Experiment(cfg, store, digits.input_shape, digits.num_classes)
    model = exp.new_model()
    thetas = theta_ks(model, store.load_theta0(0), full_mask(exp.prunable_tensors(model)), digits, cfg, [0, 30],
                      data_seed=exp.seed("data", 0))
    rewind = store.load_rewind(0)
    assert all(torch.equal(thetas[30][n], rewind[n]) for n in rewind)
    assert all(torch.equal(thetas[0][n], store.load_theta0(0)[n]) for n in rewind)

    (r,) = instability(run_dir, 1, [30], points=5, splits=digits, log=None)
    mask = store.load_level_mask(0, 1)
    assert r.level == 1 and r.weights_remaining == pytest.approx(0.8, abs=0.01)
    point = run_dir / "instability" / "trial_0" / "level_1" / "k_30"
    for c in range(COPIES):
        w = torch.load(point / f"copy_{c}.pt", weights_only=True)
        assert all(float(w[n][~m].abs().sum()) == 0.0 for n, m in mask.items())
        assert all(bool((w[n][m] != 0).any()) for n, m in mask.items())


@pytest.mark.parametrize("ks, level, words", [
    ([0, 120], 0, "rewind iteration 120: must be below train.iterations = 120"),
    ([-1], 0, "rewind iteration -1: must be >= 0"),
    ([], 0, "no rewind iterations given"),
    ([0], 1, "level 1 needs that level's IMP mask, which only a run has: run `lth run --levels 1`"),
])
def test_unanswerable_requests_are_config_errors_before_any_work(tmp_path, ks, level, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace("`", ".")):
        instability(_cfg(), level, ks, root=tmp_path, log=None)
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_an_output_directory_of_another_configuration_is_refused(tmp_path, digits):
    _sweep(_cfg(), tmp_path, ks=(0,), splits=digits, out=tmp_path / "out")
    with pytest.raises(StoreError, match="another configuration"):
        _sweep(_cfg(iterations=100), tmp_path, ks=(0,), splits=digits, out=tmp_path / "out")


def test_the_sweep_and_the_barrier_are_public_names_of_lth():
    import lth

    assert lth.instability is instability and lth.error_barrier is error_barrier
    assert {"instability", "error_barrier"} <= set(lth.__all__)


def test_an_output_directory_has_one_writer_and_its_first_drops_a_killed_writers_temporaries(tmp_path):
    cfg = _cfg()
    stale = tmp_path / "out" / "trial_0" / "level_0" / "k_0" / ".result.json.123.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text("torn")
    with InstabilityDir.open(tmp_path / "out", cfg):
        assert not stale.exists()
        with pytest.raises(StoreError, match=r"is in use by another lth instability process; wait for it to finish"):
            InstabilityDir.open(tmp_path / "out", cfg)
    InstabilityDir.open(tmp_path / "out", cfg).close()  # released: the next writer may open it
