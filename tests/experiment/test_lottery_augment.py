"""data.augment reaches every unit the IMP driver trains: an augmented run differs from a plain
one, lives in its own run directory, and resumes after a crash to identical results."""

from __future__ import annotations

import json

import pytest

from lth.config import config_hash
from lth.experiment import Lottery
from lth.store import RunStore

from .test_lottery import Crash, crash_at_checkpoint_write, make_cfg, run, without_seconds


def metrics(path, level, branch):
    text = (path / f"trial_0/level_{level}/{branch}/metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_augmented_run_trains_on_augmented_batches_and_resumes_identically(tmp_path, digits, monkeypatch):
    cfg = make_cfg(lottery__levels=1, data__augment="crop_flip")
    plain_cfg = make_cfg(lottery__levels=1)
    assert config_hash(cfg) != config_hash(plain_cfg)
    ref_path, ref = run(cfg, tmp_path / "ref", digits)
    plain_path, _ = run(plain_cfg, tmp_path / "plain", digits)
    # the dense network: same start, and evaluation is never augmented
    assert metrics(ref_path, 0, "ticket")[0] == metrics(plain_path, 0, "ticket")[0]
    for level, branch in [(0, "ticket"), (1, "ticket"), (1, "reinit"), (1, "random_mask")]:
        aug, plain = metrics(ref_path, level, branch), metrics(plain_path, level, branch)
        assert aug[-1]["train_loss"] != plain[-1]["train_loss"], (level, branch)
    crash_at_checkpoint_write(monkeypatch, 8)  # level 1, after its units checkpointed at 100
    with pytest.raises(Crash):
        run(cfg, tmp_path / "b", digits)
    path = next((tmp_path / "b").iterdir())
    lines: list[str] = []
    with RunStore.open(cfg, run_dir=path) as store:
        resumed = Lottery(cfg, store, digits, log=lines.append).run()
    assert any("resuming from checkpoint" in line for line in lines)
    assert without_seconds(resumed) == without_seconds(ref)
