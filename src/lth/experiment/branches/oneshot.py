"""``oneshot``: the trained dense network pruned in one shot to the level's size, beside the
iterative ticket in the same run.

The paper's one-shot comparison (Frankle & Carbin 2019, Sec. 2 and Fig. 4): prune the trained
dense network (the ``final.pt`` of level 0) straight to level L's size, keeping in each layer the
largest-magnitude weights, exactly as many as the level's IMP mask keeps there (the same
per-layer counts; with ``prune.strategy = "global"`` the layers keep the IMP mask's allocation, so
only the choice of weights within each layer differs), then reset the survivors to theta0 (or
rewind them to theta_k; with ``lottery.rewind_optimizer`` the optimizer too). The mask is the
unit's own and is stored with it. At level 1 it is the ticket's mask; with ``lottery.one_shot``
(every level pruned one-shot) it repeats the ticket.
"""

from __future__ import annotations

import torch

from ...pruning import prune_layerwise_to_counts
from . import BranchContext, UnitStart, register_branch


@register_branch("oneshot", "the trained dense network pruned in one shot to the level's per-layer sizes, "
                 "on theta0 (or theta_k)", own_mask=True)
def oneshot(ctx: BranchContext) -> UnitStart:
    dense = ctx.trained(0)
    full = {n: torch.ones_like(m, dtype=torch.bool) for n, m in ctx.mask.items()}
    keep = {n: int(m.sum()) for n, m in ctx.mask.items()}
    mask = prune_layerwise_to_counts(dense, full, keep)
    return UnitStart(mask, ctx.start_state, ctx.rewind_iteration, optimizer=ctx.start_optimizer,
                     trained_from=(0,))
