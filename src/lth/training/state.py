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
