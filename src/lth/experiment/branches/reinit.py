"""``reinit``: the ticket's mask with a fresh initialisation from the same distribution.

The paper's first control (Sec. 2, "randomly reinitialized"): if the winning ticket's structure
alone mattered, a reinitialised ticket would learn as fast and as well. Its draw
(:meth:`lth.experiment.Experiment.draw_init`) is seeded by ("reinit", trial, level), so each
level's control is independent and repeatable. Its optimizer always starts fresh: the dense run's
moments at k (``lottery.rewind_optimizer``) belong to theta_k, not to a new draw.
"""

from __future__ import annotations

from . import BranchContext, UnitStart, register_branch


@register_branch("reinit", "the level's mask, fresh initialisation from the same distribution")
def reinit(ctx: BranchContext) -> UnitStart:
    return UnitStart(ctx.mask, ctx.draw_init("reinit", ctx.trial, ctx.level), ctx.rewind_iteration)
