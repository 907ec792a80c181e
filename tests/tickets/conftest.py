"""A tiny finished run shared by the tickets tests (built once for the whole package).

digits, 60 iterations, levels 0-2 at 75% pruning per level, branches ticket/reinit/random_mask.
Tests that damage a run work on ``run_copy``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lth.config import ExperimentConfig, get_preset
from lth.experiment import Lottery
from lth.store import RunStore
from tests.tickets.helpers import BRANCHES


@pytest.fixture(scope="package")
def run(tmp_path_factory, digits) -> Path:
    """A finished run: levels 0-2, branches ticket/reinit/random_mask; hidden layers keep 25%
    per level (6.25% at level 2), the output layer 62.5% per level."""
    d = get_preset("digits-quick").to_dict()
    d["train"].update(iterations=60, eval_every=30)
    d["lottery"].update(levels=2, trials=1, branches=BRANCHES)
    d["prune"].update(rate=0.75)
    cfg = ExperimentConfig.from_dict(d)
    with RunStore.open(cfg, root=tmp_path_factory.mktemp("runs")) as store:
        Lottery(cfg, store, digits, log=lambda s: None).run()
        return store.path


@pytest.fixture
def run_copy(run, tmp_path) -> Path:
    dst = tmp_path / run.name
    shutil.copytree(run, dst)
    return dst
