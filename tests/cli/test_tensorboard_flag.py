"""`lth run --tensorboard [DIR]`: every unit's curves, read back with TensorBoard's own reader, are
the unit's metrics.jsonl."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lth.cli import main

ARGS = ["run", "--preset", "digits-quick", "--levels", "1", "--trials", "1", "--iterations", "30",
        "--eval-every", "10", "--branches", "ticket,reinit", "--quiet"]


@pytest.mark.parametrize("where", ["default", "given"])
def test_tensorboard_writes_one_run_per_unit_equal_to_its_metrics(tmp_path, capsys, where):
    given = tmp_path / "board"
    assert main([*ARGS, "--out", str(tmp_path / "runs"), "--tensorboard",
                 *([str(given)] if where == "given" else [])]) == 0
    assert capsys.readouterr().out.startswith("level  weights %")  # still only the table
    run_dir = next((tmp_path / "runs").iterdir())
    board = given if where == "given" else run_dir / "tensorboard"
    units = sorted(str(p.relative_to(board)) for p in board.glob("trial_*/level_*/*"))
    assert units == ["trial_0/level_0/ticket", "trial_0/level_1/reinit", "trial_0/level_1/ticket"]
    for unit in units:
        acc = EventAccumulator(str(board / unit))
        acc.Reload()
        rows = [json.loads(line) for line in (run_dir / unit / "metrics.jsonl").read_text().splitlines()]
        assert [r["iteration"] for r in rows] == [0, 10, 20, 30]
        for tag in ("val_loss", "val_accuracy", "test_accuracy", "test_loss", "lr"):
            got = [(e.step, e.value) for e in acc.Scalars(tag)]
            assert got == [(r["iteration"], pytest.approx(r[tag], rel=1e-6)) for r in rows], (unit, tag)
        assert [e.step for e in acc.Scalars("train_loss")] == [10, 20, 30]  # none before the first step
