"""Iteration-level schedules: learning rate and data order (paper App. B counts iterations)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..config import TrainConfig
from ..seeds import derive_seed


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """LR at iteration ``step``: linear warm-up, then step decay at each milestone."""
    lr = cfg.lr * cfg.lr_gamma ** sum(step >= m for m in cfg.lr_milestones)
    if cfg.warmup_iterations and step < cfg.warmup_iterations:
        lr *= (step + 1) / cfg.warmup_iterations
    return lr


# How a unit's learning rate follows the configured schedule (Renda, Frankle & Carbin 2020):
# "schedule": learning_rate(cfg, s) at iteration s, so a unit starting at k replays the schedule
# from k (weight and learning-rate rewinding); "final": the schedule's last value,
# learning_rate(cfg, iterations - 1), at every iteration (fine-tuning).
LR_SCHEDULES = ("schedule", "final")


def lr_schedule(cfg: TrainConfig, kind: str = "schedule") -> Callable[[int], float]:
    """The learning rate of iteration ``s`` as a function, for a :data:`LR_SCHEDULES` name.

    >>> from lth.config import TrainConfig
    >>> cfg = TrainConfig(iterations=100, lr=0.1, lr_milestones=(50,), lr_gamma=0.1)
    >>> lr_schedule(cfg)(10), lr_schedule(cfg, "final")(10)
    (0.1, 0.010000000000000002)
    """
    if kind == "schedule":
        return lambda step: learning_rate(cfg, step)
    if kind == "final":
        final = learning_rate(cfg, cfg.iterations - 1)
        return lambda step: final
    raise ValueError(f"learning-rate schedule {kind!r}: choose one of {', '.join(LR_SCHEDULES)}")


def iterations_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped); a clear error when none fits."""
    if n // batch_size < 1:
        raise ValueError(f"train.batch_size = {batch_size} is larger than the training set ({n} examples)")
    return n // batch_size


def epoch_permutation(n: int, data_seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The training-set order for one epoch: a pure function of the seed and the epoch number, so
    resuming needs no sampler state."""
    g = torch.Generator().manual_seed(derive_seed(data_seed, "epoch", epoch))
    return torch.randperm(n, generator=g).to(device)
