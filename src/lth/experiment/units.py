"""Units: one (trial, level, branch) trained from its start state with its mask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..pruning import Mask


@dataclass(frozen=True, order=True)
class UnitKey:
    trial: int
    level: int
    branch: str

    def __str__(self) -> str:
        return f"trial {self.trial}, level {self.level}, branch {self.branch}"

    def as_tuple(self) -> tuple[int, int, str]:
        return (self.trial, self.level, self.branch)


@dataclass
class UnitSpec:
    key: UnitKey
    mask: Mask
    start_state: dict[str, torch.Tensor]
    start_step: int
    lr: str = "schedule"  # a name of lth.training.LR_SCHEDULES
    start_optimizer: dict[str, Any] | None = None  # None: a fresh optimizer
    trained_from: tuple[int, ...] = ()  # levels whose trained ticket the start was computed from
