"""Iteration-level schedules (lth.training.schedule): learning rate and data order."""

from __future__ import annotations

import pytest
import torch

from lth.config import TrainConfig, get_preset
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


# The learning rate of iteration `step` (0-based: the step-th optimizer update) for the paper's
# presets, written out from the protocol: linear warm-up lr * (step + 1) / W for step < W, then x0.1 at
# each milestone. ResNet-20 (PAPER.md): 0.03, 20K warm-up, drops at 20K and 25K, so the warm-up ends
# where the first drop begins and 0.03 itself is reached only at iteration 19,999. VGG-19: 0.1, 10K
# warm-up, drops at epochs 80 and 120 (703 iterations each: 56,240 and 84,360).
PAPER_SCHEDULES = {
    "resnet20-cifar10": [(0, 0.03 / 20_000), (9_999, 0.015), (19_998, 0.03 * 19_999 / 20_000), (19_999, 0.03),
                         (20_000, 0.003), (24_999, 0.003), (25_000, 0.0003), (29_999, 0.0003)],
    "resnet20-cifar10-lr0.1": [(0, 0.1), (19_999, 0.1), (20_000, 0.01), (25_000, 0.001)],
    "resnet20-cifar10-lr0.01": [(0, 0.01), (19_999, 0.01), (20_000, 0.001), (25_000, 0.0001)],
    "vgg19-cifar10": [(0, 0.1 / 10_000), (4_999, 0.05), (9_999, 0.1), (10_000, 0.1), (56_239, 0.1),
                      (56_240, 0.01), (84_359, 0.01), (84_360, 0.001), (111_999, 0.001)],
    "vgg19-cifar10-lr0.01": [(0, 0.01), (56_239, 0.01), (56_240, 0.001), (84_360, 0.0001)],
    "vgg16-cifar10": [(0, 0.1), (28_079, 0.1), (28_080, 0.01), (42_119, 0.01), (42_120, 0.001), (56_159, 0.001)],
    # Adam at a constant rate: no warm-up, no drop
    "lenet300-mnist": [(0, 1.2e-3), (49_999, 1.2e-3)],
    "conv6-cifar10": [(0, 3e-4), (29_999, 3e-4)],
}


@pytest.mark.parametrize("name", sorted(PAPER_SCHEDULES))
def test_presets_learning_rate_at_chosen_iterations(name):
    cfg = get_preset(name).train
    for step, lr in PAPER_SCHEDULES[name]:
        assert step < cfg.iterations
        assert learning_rate(cfg, step) == pytest.approx(lr, rel=1e-12, abs=0), (name, step)


def test_warmup_is_linear_and_a_drop_during_warmup_scales_it():
    cfg = TrainConfig(iterations=100, lr=1.0, warmup_iterations=10, lr_milestones=(5,), lr_gamma=0.5)
    assert [learning_rate(cfg, s) for s in range(12)] == pytest.approx(
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.3, 0.35, 0.4, 0.45, 0.5, 0.5, 0.5])


def test_iterations_per_epoch_drops_the_last_partial_batch_and_refuses_a_batch_larger_than_the_set():
    assert iterations_per_epoch(1000, 60) == 16
    assert iterations_per_epoch(60, 60) == 1
    with pytest.raises(ValueError, match="train.batch_size = 61 is larger than the training set"):
        iterations_per_epoch(60, 61)
