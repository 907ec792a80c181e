"""lth.experiment.tensorboard: each unit's curves as TensorBoard scalars, equal to its metrics.jsonl,
each evaluation once even when training was interrupted and resumed."""

from __future__ import annotations

import json
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lth.config import ConfigError, ExperimentConfig, get_preset
from lth.experiment import Lottery, ProgressSink, Sinks, UnitKey
from lth.experiment.tensorboard import SCALARS, TensorBoardProgress, require_tensorboard
from lth.store import RunStore


class Crash(Exception):
    pass


class CrashAt(ProgressSink):
    def __init__(self, key: UnitKey, iteration: int):
        self.at = (key, iteration)

    def evaluated(self, key, point):
        if (key, point.iteration) == self.at:
            raise Crash


def _cfg() -> ExperimentConfig:
    d = get_preset("digits-quick").to_dict()
    d["train"].update(iterations=40, eval_every=10)
    d["lottery"].update(levels=1, trials=1, branches=("ticket", "random_mask"))
    d["runtime"].update(checkpoint_every=10, test_eval="best")
    return ExperimentConfig.from_dict(d)


def scalars(unit_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(unit_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def expected(metrics_file) -> dict[str, list[tuple[int, float]]]:
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    return {tag: [(r["iteration"], pytest.approx(r[field], rel=1e-6)) for r in rows if r[field] is not None]
            for tag, field in SCALARS.items() if any(r[field] is not None for r in rows)}


def test_every_unit_is_a_run_whose_scalars_are_its_metrics_once_after_a_resume(tmp_path, digits):
    cfg = _cfg()
    board = tmp_path / "board"
    crash = Sinks(TensorBoardProgress(board), CrashAt(UnitKey(0, 1, "random_mask"), 30))
    with RunStore.open(cfg, root=tmp_path / "runs") as store, pytest.raises(Crash):
        try:
            Lottery(cfg, store, digits, progress=crash).run()
        finally:
            crash.close()  # as lth run does: what was written so far reaches the files
    sink = TensorBoardProgress(board)
    with RunStore.open(cfg, root=tmp_path / "runs") as store:
        Lottery(cfg, store, digits, progress=sink).run()
        path = store.path
    sink.close()
    units = sorted(p.relative_to(board) for p in board.glob("trial_*/level_*/*"))
    assert [str(u) for u in units] == ["trial_0/level_0/ticket", "trial_0/level_1/random_mask",
                                       "trial_0/level_1/ticket"]
    for unit in units:
        got, want = scalars(board / unit), expected(path / unit / "metrics.jsonl")
        assert set(got) == set(want) and {"val_loss", "val_accuracy", "test_accuracy", "lr"} <= set(got), unit
        assert got == want, unit
        # test_eval="best": the test split is measured where validation improves and at the end
        assert [s for s, _ in got["val_loss"]] == [0, 10, 20, 30, 40]
    # the resumed units' first attempt is gone from disk, not only hidden by TensorBoard
    assert [len(list((board / u).glob("events.out.tfevents.*"))) for u in units] == [1, 1, 1]


def test_without_the_tensorboard_package_it_is_one_config_error(monkeypatch):
    for name in [m for m in sys.modules if m == "torch.utils.tensorboard" or m.startswith("torch.utils.tensorboard.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what an import of a missing package does
    with pytest.raises(ConfigError, match=r"^--x needs the tensorboard package: pip install 'lth\[tensorboard\]'$"):
        require_tensorboard("--x")
    with pytest.raises(ConfigError, match="^TensorBoard logging needs"):
        TensorBoardProgress("unused")
