"""Iteration-level schedules (lth.training.schedule): learning rate and data order."""

from __future__ import annotations

import pytest
import torch

from lth.config import TrainConfig
from lth.training.schedule import epoch_permutation, iterations_per_epoch, learning_rate


def test_epoch_permutation_is_a_permutation_and_reshuffles_each_epoch():
    p0 = epoch_permutation(1000, 5, 0, torch.device("cpu"))
    p1 = epoch_permutation(1000, 5, 1, torch.device("cpu"))
    assert sorted(p0.tolist()) == list(range(1000))
    assert not torch.equal(p0, p1)
    assert torch.equal(p0, epoch_permutation(1000, 5, 0, torch.device("cpu")))


def test_epoch_permutation_differs_between_data_seeds():
    assert not torch.equal(epoch_permutation(1000, 5, 0, torch.device("cpu")),
                           epoch_permutation(1000, 6, 0, torch.device("cpu")))


def test_learning_rate_schedule_warmup_and_milestones():
    cfg = TrainConfig(iterations=1000, lr=0.1, lr_milestones=(500, 800), lr_gamma=0.1, warmup_iterations=100)
    assert learning_rate(cfg, 0) == pytest.approx(0.001)
    assert learning_rate(cfg, 99) == pytest.approx(0.1)
    assert learning_rate(cfg, 499) == pytest.approx(0.1)
    assert learning_rate(cfg, 500) == pytest.approx(0.01)
    assert learning_rate(cfg, 800) == pytest.approx(0.001)


def test_iterations_per_epoch_drops_the_last_partial_batch_and_refuses_a_batch_larger_than_the_set():
    assert iterations_per_epoch(1000, 60) == 16
    assert iterations_per_epoch(60, 60) == 1
    with pytest.raises(ValueError, match="train.batch_size = 61 is larger than the training set"):
        iterations_per_epoch(60, 61)
