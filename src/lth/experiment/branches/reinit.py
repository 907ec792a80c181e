"""``reinit``: the ticket's mask with a fresh initialisation from the same distribution.

The paper's first control (Sec. 2, "randomly reinitialized"): if the winning ticket's structure
alone mattered, a reinitialised ticket would learn as fast and as well. Its draw is seeded by
("reinit", trial, level), so each level's control is independent and repeatable.
"""

from __future__ import annotations

import torch
from torch import nn

from ...models import initialize
from ...seeds import generator
from . import BranchContext, UnitStart, register_branch


def reinit_state(model: nn.Module, seed: int, trial: int, level: int) -> dict[str, torch.Tensor]:
    """A fresh draw from ``model``'s initialisation distribution (``model`` is overwritten)."""
    initialize(model, generator(seed, "reinit", trial, level))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@register_branch("reinit", "the level's mask, fresh initialisation from the same distribution")
def reinit(ctx: BranchContext) -> UnitStart:
    return UnitStart(ctx.mask, ctx.draw_init("reinit", ctx.trial, ctx.level), ctx.rewind_iteration)
