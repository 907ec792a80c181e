"""``finetune``: the trained network the level's mask was pruned from, retrained at the final
learning rate.

Fine-tuning as Renda, Frankle & Carbin (ICLR 2020, "Comparing rewinding and fine-tuning", Sec. 2)
define it: keep the trained weights of the survivors (for level L, the ``final.pt`` of the ticket
of level L-1, or of the dense level 0 with ``lottery.one_shot``, under level L's mask) and train on
at the schedule's final learning rate. The retraining budget is the ticket's: from k
(``lottery.rewind_iteration``) to T, T - k iterations, with the ticket's data order. The optimizer
starts fresh.
"""

from __future__ import annotations

from . import BranchContext, UnitStart, register_branch


@register_branch("finetune", "the trained weights the mask was pruned from, retrained at the final learning "
                 "rate for T - k iterations")
def finetune(ctx: BranchContext) -> UnitStart:
    return UnitStart(ctx.mask, ctx.trained(ctx.source_level), ctx.rewind_iteration, lr="final",
                     trained_from=(ctx.source_level,))
