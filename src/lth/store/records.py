"""The typed record of one finished unit: what ``result.json`` and ``summary.json`` hold."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

STATUSES = ("ok", "failed")
_REQUIRED = ("trial", "level", "branch", "weights_remaining")
_KINDS = {"trial": "count", "level": "count", "branch": "str", "weights_remaining": "real", "status": "str",
          "early_stop_iteration": "count", "early_stop_test_accuracy": "real", "early_stop_val_accuracy": "real",
          "min_val_loss": "real", "final_test_accuracy": "real", "final_val_loss": "real",
          "final_iteration": "count", "train_seconds": "real", "error": "str",
          "start_iteration": "count", "lr_schedule": "str", "optimizer_start": "str",
          "machine": "str", "software": "str"}
_KIND_NAMES = {"count": "an integer >= 0", "real": "a number", "str": "a string"}


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if kind == "count":
        return isinstance(value, int) and value >= 0
    return isinstance(value, (int, float))


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
    # How the unit started (absent from records written before these fields existed): the
    # iteration it trained from (0, or k when rewinding: it trains to the end, T - k iterations);
    # its learning-rate schedule ("schedule": the configured one from its start iteration,
    # "final": the schedule's final value throughout; lth.training.schedule.LR_SCHEDULES); its
    # optimizer ("fresh", or "rewound": the dense run's state at k, lottery.rewind_optimizer).
    start_iteration: int | None = None
    lr_schedule: str | None = None
    optimizer_start: str | None = None
    # Where the unit trained (absent from older records): the processor or GPU model and the
    # number of logical CPUs, and the versions of lth, torch and Python
    # (lth.training.device.describe_machine / software_versions). A resumed unit names the machine
    # that finished it.
    machine: str | None = None
    software: str | None = None

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
    def from_metrics(cls, trial: int, level: int, branch: str, weights_remaining: float,
                     metrics: list[dict[str, Any]], train_seconds: float | None = None,
                     **start: Any) -> UnitRecord:
        """The record of a unit that finished training, from its evaluations (``metrics.jsonl``
        lines): early stop at the minimum validation loss, the first one on ties (paper App. B).
        ``start``: ``start_iteration``, ``lr_schedule``, ``optimizer_start`` (and ``machine``,
        ``software``)."""
        return cls(trial, level, branch, weights_remaining, "ok", **summarize_metrics(metrics),
                   train_seconds=train_seconds, **start)

    def metrics_problem(self, metrics: list[dict[str, Any]]) -> str | None:
        """Why this record's numbers are not the ones its evaluations give, or None if they are."""
        try:
            want = summarize_metrics(metrics)
        except (KeyError, TypeError, ValueError) as e:
            return f"metrics.jsonl has no usable evaluations ({type(e).__name__}: {e})"
        for name, value in want.items():
            have = getattr(self, name)
            if have != value:
                return f"{name} = {have!r} in result.json, but metrics.jsonl gives {value!r}"
        return None

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
        for name, value in d.items():
            kind = _KINDS[name]
            if value is None and name not in _REQUIRED:
                continue
            if not _is_kind(value, kind):
                raise ValueError(f"{name} = {value!r} is not {_KIND_NAMES[kind]}")
        if not 0.0 <= d["weights_remaining"] <= 1.0:
            raise ValueError(f"weights_remaining = {d['weights_remaining']!r} is not a fraction in [0, 1]")
        return cls(**d)


def summarize_metrics(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The record's numbers from a unit's evaluations, in iteration order."""
    if not metrics:
        raise ValueError("no evaluation")
    es = min(metrics, key=lambda e: (e["val_loss"], e["iteration"]))
    last = metrics[-1]
    return {"early_stop_iteration": es["iteration"], "early_stop_test_accuracy": es["test_accuracy"],
            "early_stop_val_accuracy": es["val_accuracy"], "min_val_loss": es["val_loss"],
            "final_test_accuracy": last["test_accuracy"], "final_val_loss": last["val_loss"],
            "final_iteration": last["iteration"]}
