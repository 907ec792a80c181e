"""``random_mask``: a random mask with the ticket's per-layer sizes, on theta0 (or theta_k).

The paper's "random pruning" control (Sec. 2): same per-layer sparsity, random positions, same
starting values; it tests whether the positions IMP found matter. Seeded by ("random_mask", trial,
level); the mask is stored with the unit. It starts from the same values as the ticket, so with
``lottery.rewind_optimizer`` from the same rewound optimizer state too (masked by its own mask).
"""

from __future__ import annotations

from ...pruning import random_mask_like
from ...seeds import generator
from . import BranchContext, UnitStart, register_branch


@register_branch("random_mask", "a random mask with the same per-layer sizes, on theta0 (or theta_k)",
                 own_mask=True)
def random_mask(ctx: BranchContext) -> UnitStart:
    mask = random_mask_like(ctx.mask, generator(ctx.cfg.lottery.seed, "random_mask", ctx.trial, ctx.level))
    return UnitStart(mask, ctx.start_state, ctx.rewind_iteration, optimizer=ctx.start_optimizer)
