"""``ticket``: the IMP mask with the survivors reset to theta0, or rewound to theta_k.

The winning-ticket hypothesis itself (Frankle & Carbin 2019, Sec. 1); with k > 0 the rewinding
variant of Frankle et al. (2019, "Stabilizing"). It always runs: the next level's mask is pruned
from this unit's trained weights. With ``lottery.rewind_optimizer`` the optimizer is rewound too:
the unit starts from the dense run's optimizer state at k (masked) instead of a fresh one.
"""

from __future__ import annotations

from . import BranchContext, UnitStart, register_branch


@register_branch("ticket", "the level's mask, survivors reset to theta0 (or rewound to theta_k)")
def ticket(ctx: BranchContext) -> UnitStart:
    return UnitStart(ctx.mask, ctx.start_state, ctx.rewind_iteration, optimizer=ctx.start_optimizer)
