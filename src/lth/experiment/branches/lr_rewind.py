"""``lr_rewind``: the trained network the level's mask was pruned from, retrained with the
learning-rate schedule replayed from k.

Learning-rate rewinding (Renda, Frankle & Carbin, ICLR 2020, Sec. 2): keep the survivors' trained
weights (as :mod:`.finetune`) but rewind the learning rate: the unit trains from k
(``lottery.rewind_iteration``, 0 allowed) to T, the ticket's budget of T - k iterations, at the
configured schedule's rate of each iteration, learning_rate(k), ..., learning_rate(T - 1): the
weights are not rewound, the schedule is. The optimizer starts fresh.
"""

from __future__ import annotations

from . import BranchContext, UnitStart, register_branch


@register_branch("lr_rewind", "the trained weights the mask was pruned from, retrained with the learning-rate "
                 "schedule replayed from k")
def lr_rewind(ctx: BranchContext) -> UnitStart:
    return UnitStart(ctx.mask, ctx.trained(ctx.source_level), ctx.rewind_iteration, lr="schedule",
                     trained_from=(ctx.source_level,))
