"""Iteration-level schedules: learning rate and data order (paper App. B counts iterations)."""

from __future__ import annotations

import torch

from ..config import TrainConfig
from ..seeds import derive_seed


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """LR at iteration ``step``: linear warm-up, then step decay at each milestone."""
    lr = cfg.lr * cfg.lr_gamma ** sum(step >= m for m in cfg.lr_milestones)
    if cfg.warmup_iterations and step < cfg.warmup_iterations:
        lr *= (step + 1) / cfg.warmup_iterations
    return lr


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
