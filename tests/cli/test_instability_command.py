"""``lth instability``: the tables and figure it writes, and one error line (status 2) per bad
request, before any training."""

from __future__ import annotations

import csv
import json
import sys

import pytest
import torch

from lth.cli import main
from lth.config import get_preset, with_section
from lth.store import RunStore

QUICK = ["--preset", "digits-quick", "--iterations", "100", "--points", "5", "--threads", "1"]


def test_a_preset_sweep_prints_the_table_and_writes_every_file(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    args = ["instability", *QUICK, "--level", "0", "--rewind", "0,20", "--runs", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    folder = next(tmp_path.glob("digits-quick-*")) / "instability"
    table = out[out.index("trial  level"):].splitlines()
    assert table[0].split() == ["trial", "level", "weights", "%", "k", "train", "barrier", "%", "test", "barrier",
                                "%", "endpoint", "test", "acc", "%"]
    assert [line.split()[:4] for line in table[2:4]] == [["0", "0", "100.00", "0"], ["0", "0", "100.00", "20"]]
    for name in ("instability.md", "instability.csv", "instability.json", "instability.png", "instability.svg"):
        assert (folder / name).stat().st_size > 0, name
    rows = list(csv.DictReader((folder / "instability.csv").open()))
    stored = json.loads((folder / "instability.json").read_text())
    assert [int(r["k"]) for r in rows] == [0, 20] and [r["rewind_iteration"] for r in stored] == [0, 20]
    assert float(rows[1]["test_barrier_pct"]) == pytest.approx(100 * stored[1]["test_barrier"], abs=1e-4)
    md = (folder / "instability.md").read_text()
    assert "| 0 | 0 | 100.00 | 20 |" in md and "\n\n| trial | level |" in md  # a table of its own

    assert main(args) == 0  # the same command again: everything is finished
    assert "0 copies trained, 0 paths evaluated, 2 rewind points already finished" in capsys.readouterr().out


def test_without_matplotlib_the_tables_are_written_and_one_line_says_the_plot_was_skipped(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert main(["instability", *QUICK, "--level", "0", "--rewind", "0", "--runs", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("plot skipped: matplotlib is not installed (pip install 'lth[plot]')") == 1
    folder = next(tmp_path.glob("digits-quick-*")) / "instability"
    assert (folder / "instability.csv").exists() and not (folder / "instability.png").exists()


def test_a_damaged_result_of_another_k_is_left_out_of_the_tables_with_a_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    args = ["instability", *QUICK, "--level", "0", "--rewind", "0", "--runs", str(tmp_path), "--quiet"]
    assert main(args) == 0
    other = next(tmp_path.glob("digits-quick-*")) / "instability" / "trial_0" / "level_0" / "k_7" / "result.json"
    other.parent.mkdir()
    other.write_text("[]")
    capsys.readouterr()
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert err == (f"lth: warning: {other} is not a valid instability result (expected a JSON object, got list); "
                   "left out of the tables (rerun the command that measured it)\n")
    rows = list(csv.DictReader((other.parents[3] / "instability.csv").open()))
    assert [r["k"] for r in rows] == ["0"]


def _fake_run(tmp_path, levels: int = 1):
    """A run directory of digits-quick that has reached level 1 (its mask), trained nothing: the
    checks below happen before anything would read more."""
    cfg = with_section(get_preset("digits-quick"), "lottery", levels=levels, trials=1)
    store = RunStore.open(cfg, run_dir=tmp_path / "run", lock=False)
    store.save_level_mask(0, 1, {"0.weight": torch.ones(3, dtype=torch.bool)})
    return store.path


@pytest.mark.parametrize("extra, words", [
    (["--level", "0", "--rewind", "0,1x0"], "--rewind 0,1x0: '1x0' is not an iteration; give comma-separated "
                                            "integers, e.g. --rewind 0,100,500,2000"),
    (["--level", "0", "--rewind", "0,,5"], "'' is not an iteration"),
    (["--level", "0", "--rewind", "0,-5"], "rewind iteration -5: must be >= 0 (0 = theta0, the initialisation)"),
    (["--level", "0", "--rewind", "0,2000"], "rewind iteration 2000: must be below train.iterations = 2000"),
    (["--level", "-1", "--rewind", "0"], "level = -1: must be an integer >= 0"),
    (["--level", "0", "--rewind", "0", "--points", "1"], "points = 1: must be an integer from 2"),
    (["--level", "3", "--rewind", "0"], "level 3: RUN has levels 0-1; extend the run with `lth run --run-dir RUN "
                                        "--levels 3`"),
    (["--level", "0", "--rewind", "0", "--trial", "1"], "trial 1: RUN has trials 0-0"),
    (["--level", "0", "--rewind", "0", "--iterations", "10"], "--iterations is for --preset"),
    (["--level", "0", "--rewind", "0", "--set", "train.lr=0.1"], "--set train.lr=0.1: a run directory fixes its "
                                                                 "configuration"),
])
def test_bad_requests_on_a_run_directory_are_one_line_with_status_2(tmp_path, capsys, extra, words):
    run = _fake_run(tmp_path)
    assert main(["instability", str(run), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lth: error: ") and err.count("\n") == 1
    assert words.replace("RUN", str(run)) in err
    assert not (run / "instability").exists()


def test_a_level_the_run_has_not_pruned_yet_names_the_fix(tmp_path, capsys):
    run = _fake_run(tmp_path, levels=2)  # configured for 2 levels, stopped before level 2's mask
    assert main(["instability", str(run), "--level", "2", "--rewind", "0"]) == 2
    err = capsys.readouterr().err
    assert err == (f"lth: error: level 2 of trial 0 is not pruned yet in {run} (no trial_0/level_2/mask.pt): "
                   "rerun its `lth run` command until level 1 has finished\n")


@pytest.mark.parametrize("args, words", [
    (["--preset", "digits-quick", "--level", "2", "--rewind", "0"],
     "level 2 needs that level's IMP mask, which only a run has: run `lth run --levels 2` with the same preset "
     "and flags first"),
    (["--level", "0", "--rewind", "0"], "give either RUN_DIR or --preset NAME (not both)"),
    (["--preset", "no-such", "--level", "0", "--rewind", "0"], "no-such"),
])
def test_bad_preset_requests_are_one_line_with_status_2(tmp_path, capsys, args, words):
    assert main(["instability", *args, "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lth: error: ") and err.count("\n") == 1 and words in err
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_a_run_directory_is_a_store_error(tmp_path, capsys):
    assert main(["instability", str(tmp_path), "--level", "0", "--rewind", "0"]) == 4
    assert capsys.readouterr().err == f"lth: error: {tmp_path} is not an lth run directory (no config.json)\n"


def test_a_run_of_a_users_own_model_is_refused_naming_why(tmp_path, capsys):
    cfg = with_section(with_section(get_preset("digits-quick"), "model", name="user"), "data", dataset="user")
    run = RunStore.open(cfg, run_dir=tmp_path / "run", lock=False).path
    assert main(["instability", str(run), "--level", "0", "--rewind", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lth: error: {run} is a run of a network outside lth's model registry (model.name = "
                          "'user': lth.find_tickets with your own model)") and err.count("\n") == 1
