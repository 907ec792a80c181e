"""What a training run records and resumes from: evaluation points, checkpoints, results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the unit is recorded as failed."""


@dataclass
class EvalPoint:
    iteration: int
    train_loss: float | None  # mean training loss since the previous evaluation
    val_loss: float
    val_accuracy: float
    test_loss: float | None  # None where the test split was not evaluated (test_eval="best")
    test_accuracy: float | None
    #: The learning rate of the step that led to this point; at a unit's start point (iteration 0,
    #: or k for a unit that starts at k) that of the unit's first step.
    lr: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TrainState:
    """Everything needed to continue training one unit exactly where it stopped.

    The optimizer state has the layout of a plain ``torch.optim`` optimizer over the unit's
    ``model.parameters()``, whichever engine wrote it, so any engine can resume it."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    history: list[dict[str, Any]]
    rng: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0
    running_loss: torch.Tensor | None = None  # training-loss sum since the last evaluation
    since_eval: int = 0


@dataclass
class TrainResult:
    history: list[EvalPoint]
    final_state: dict[str, torch.Tensor]
    seconds: float

    @property
    def early_stop(self) -> EvalPoint:
        """The evaluation with the minimum validation loss (first one on ties; paper App. B)."""
        return min(self.history, key=lambda e: (e.val_loss, e.iteration))


def capture_rng() -> dict[str, Any]:
    """Every RNG a training step may draw from (dropout, CUDA kernels); data order is stateless."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def mask_optimizer_state(state: dict[str, Any], names: list[str], mask: dict[str, torch.Tensor]) -> dict[str, Any]:
    """An optimizer ``state_dict`` (the layout of a plain ``torch.optim`` optimizer over a model
    whose ``named_parameters`` are ``names``) with every per-weight tensor of a masked parameter
    (Adam's moments, SGD's momentum buffer) set to exactly 0 where ``mask`` is False.

    A pruned weight then starts with zero state as well as zero value, which keeps it exactly zero
    under Adam and SGD (see :mod:`lth.training.loop`). Step counters and hyperparameters are kept.
    Every tensor of the result is a new one: an optimizer that loads it and steps in place (the
    module engine's does) leaves the caller's state, e.g. one shared by several units, as it was."""
    out: dict[Any, dict[str, Any]] = {}
    for j, entry in state["state"].items():
        m = mask.get(names[int(j)])
        out[j] = {k: (v if not isinstance(v, torch.Tensor)
                      else torch.where(m.to(v.device), v, torch.zeros((), dtype=v.dtype, device=v.device))
                      if m is not None and v.shape == m.shape else v.clone())
                  for k, v in entry.items()}
    return {"state": out, "param_groups": [dict(g) for g in state["param_groups"]]}
