"""The experiment: IMP levels over trials, branches as a registry, units grouped to train together."""

from .audit import RunAudit, audit_run
from .branches import BRANCHES, Branch, BranchContext, UnitStart, branch_names, get_branch, register_branch
from .lottery import Experiment, Lottery, all_units, branch_order, result_record
from .plan import expected_weights_remaining, global_pool, layer_rates, next_mask
from .progress import PlainProgress, Progress, ProgressSink, Sinks, StartingUnit, fmt_seconds
from .tensorboard import TensorBoardProgress, require_tensorboard
from .units import UnitKey, UnitSpec

__all__ = ["BRANCHES", "Branch", "BranchContext", "Experiment", "Lottery", "PlainProgress", "Progress",
           "ProgressSink", "Sinks", "StartingUnit", "TensorBoardProgress", "require_tensorboard", "RunAudit",
           "UnitKey",
           "UnitSpec", "audit_run",
           "UnitStart", "all_units", "branch_names", "branch_order", "expected_weights_remaining",
           "fmt_seconds", "get_branch", "global_pool", "layer_rates", "next_mask", "register_branch",
           "result_record"]
