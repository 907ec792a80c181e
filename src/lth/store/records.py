"""The typed record of one finished unit: what ``result.json`` and ``summary.json`` hold."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

STATUSES = ("ok", "failed")


@dataclass(frozen=True)
class UnitRecord:
    """One finished (trial, level, branch). Level 0 is the dense network (branch ``ticket``).

    Accuracies are fractions; iterations count from 0. A ``failed`` unit (NaN/inf loss) has
    ``error`` and no metrics."""

    trial: int
    level: int
    branch: str
    weights_remaining: float  # fraction of prunable weights kept by the unit's mask
    status: str = "ok"
    early_stop_iteration: int | None = None  # iteration of minimum validation loss (first on ties)
    early_stop_test_accuracy: float | None = None  # test accuracy at that iteration
    early_stop_val_accuracy: float | None = None
    min_val_loss: float | None = None
    final_test_accuracy: float | None = None
    final_val_loss: float | None = None
    final_iteration: int | None = None
    train_seconds: float | None = None  # wall time of the unit's training
    error: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r}: must be one of {', '.join(STATUSES)}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.trial, self.level, self.branch)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: fields that do not apply (metrics of a failed unit, ``error`` of a
        finished one) are left out rather than written as null."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnitRecord:
        """Parse a stored record; a missing required field or an unknown one is a ValueError
        naming it."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}")
        missing = [k for k in ("trial", "level", "branch", "weights_remaining") if k not in d]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        return cls(**d)
