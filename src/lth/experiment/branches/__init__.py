"""The branches of an IMP level: a registry, one small file per branch.

A branch decides three things about the unit it trains at a level (Frankle & Carbin 2019, Sec. 2
and its controls): its **mask** (the level's IMP mask or another one), its **start state** (theta0,
theta_k, or something else) and its **start step** (0, or k when rewinding, so the learning-rate
schedule and data order continue from there). Branches of one level differ only in what they test.
With them come how the learning rate runs from the start step (the configured schedule, or its
final value: fine-tuning) and the optimizer state it starts with (fresh, or the dense run's at k).

Every branch trains from its start step k (``lottery.rewind_iteration``, 0 allowed) to the last
iteration T: the same retraining budget of T - k iterations for all, as Renda, Frankle & Carbin
(ICLR 2020, "Comparing rewinding and fine-tuning", Sec. 3) compare weight rewinding (the ticket),
learning-rate rewinding (``lr_rewind``) and fine-tuning (``finetune``). They see the same data
order at the same iteration, and their curves share one iteration axis.

Adding a branch is one file in this folder that calls :func:`register_branch`, plus its import
below; the driver, the report and export find it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ...config import ConfigError, ExperimentConfig
from ...pruning import Mask
from ..plan import source_level


@dataclass(frozen=True)
class BranchContext:
    """What a branch may use to start its unit at (trial, level)."""

    cfg: ExperimentConfig
    trial: int
    level: int
    mask: Mask  # the level's IMP mask
    start_state: dict[str, torch.Tensor]  # theta0, or theta_k when rewinding
    #: ``draw_init(*seed_path)``: a fresh initialisation of the architecture, seeded by the path
    draw_init: Callable[..., dict[str, torch.Tensor]]
    #: ``trained(level)``: the trained weights (``final.pt``) of this trial's ticket at ``level``,
    #: checked against its record; a branch that reads them names the level in
    #: :attr:`UnitStart.trained_from`, so the unit records that file as its input.
    trained: Callable[[int], dict[str, torch.Tensor]]
    #: The dense run's optimizer state at iteration k when ``lottery.rewind_optimizer``, else None.
    start_optimizer: dict[str, Any] | None = None

    @property
    def rewind_iteration(self) -> int:
        return self.cfg.lottery.rewind_iteration

    @property
    def source_level(self) -> int:
        """The level whose trained ticket this level's mask was pruned from (:func:`..plan.source_level`)."""
        return source_level(self.cfg, self.level)


@dataclass(frozen=True)
class UnitStart:
    mask: Mask
    state: dict[str, torch.Tensor]  # the start weights and buffers (the mask is applied to them)
    step: int
    #: How the learning rate runs from ``step``: a name of :data:`lth.training.LR_SCHEDULES`.
    lr: str = "schedule"
    #: The optimizer state to start from (masked by the loop), or None for a fresh optimizer.
    optimizer: dict[str, Any] | None = None
    #: Levels of this trial whose trained ticket (``final.pt``) the start was computed from; they
    #: are recorded as the unit's inputs, so retraining or damaging them retrains the unit.
    trained_from: tuple[int, ...] = ()


@dataclass(frozen=True)
class Branch:
    name: str
    description: str
    start: Callable[[BranchContext], UnitStart]
    #: The unit's mask is its own (not the level's), so it is stored with the unit.
    own_mask: bool = False


BRANCHES: dict[str, Branch] = {}


def register_branch(name: str, description: str, *, own_mask: bool = False):
    """Decorator: register ``fn(ctx) -> UnitStart`` as the branch ``name``."""

    def deco(fn: Callable[[BranchContext], UnitStart]) -> Callable[[BranchContext], UnitStart]:
        if name in BRANCHES:
            raise RuntimeError(f"branch {name!r} registered twice")
        BRANCHES[name] = Branch(name, description, fn, own_mask)
        return fn

    return deco


def branch_names() -> list[str]:
    return list(BRANCHES)


def get_branch(name: str) -> Branch:
    if name not in BRANCHES:
        raise ConfigError(f"unknown branch {name!r}; choose from {', '.join(BRANCHES)}")
    return BRANCHES[name]


def check_branches(names: tuple[str, ...]) -> None:
    """Every name is a registered branch (a ConfigError listing the valid ones otherwise)."""
    unknown = [b for b in names if b not in BRANCHES]
    if unknown:
        raise ConfigError(f"lottery.branches = {','.join(names)}: unknown branch {', '.join(unknown)}; "
                          f"choose from {', '.join(BRANCHES)}")


# Registration order is the order branches run and are reported in: the ticket (the IMP line)
# first, then its controls.
from . import ticket, reinit, random_mask, oneshot, finetune, lr_rewind  # noqa: E402,F401,I001
