"""Every unit's curves as TensorBoard event files: a :class:`~lth.experiment.progress.ProgressSink`.

TensorBoard is optional (``pip install 'lth[tensorboard]'``): this module imports it only when a
:class:`TensorBoardProgress` is made, and :func:`require_tensorboard` says in one line what to
install when it is missing.

Each unit is one TensorBoard run, ``<root>/trial_T/level_L/<branch>`` (the run directory's
layout), with the scalars ``val_loss``, ``val_accuracy``, ``test_loss`` and ``test_accuracy``
(where the test split was measured), ``train_loss`` (the mean since the previous evaluation) and
``lr`` at every evaluation iteration: the values of the unit's ``metrics.jsonl``, accuracies as
fractions. A unit that starts or resumes replaces its run: its earlier event files are removed
and a resumed unit's evaluations up to its checkpoint are written again from the checkpoint, so
the run holds each evaluation once, exactly as ``metrics.jsonl`` will, however often training was
interrupted. Units that finished in an earlier invocation without TensorBoard are not written
(their curves are in their ``metrics.jsonl``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..store import UnitRecord
from ..training import EvalPoint
from .progress import ProgressSink, StartingUnit
from .units import UnitKey

#: The scalars written at each evaluation: tag -> EvalPoint field.
SCALARS = {"val_loss": "val_loss", "val_accuracy": "val_accuracy", "test_loss": "test_loss",
           "test_accuracy": "test_accuracy", "train_loss": "train_loss", "lr": "lr"}


def require_tensorboard(what: str = "TensorBoard logging") -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or a :class:`~lth.config.ConfigError` saying
    that ``what`` needs the tensorboard package and how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(f"{what} needs the tensorboard package: pip install 'lth[tensorboard]'") from None
    return SummaryWriter


class TensorBoardProgress(ProgressSink):
    """Writes each unit's evaluations under ``root`` as it trains (module docstring)."""

    def __init__(self, root: str | Path):
        self.summary_writer = require_tensorboard()
        self.root = Path(root)
        self.writers: dict[UnitKey, Any] = {}

    def unit_dir(self, key: UnitKey) -> Path:
        return self.root / f"trial_{key.trial}" / f"level_{key.level}" / key.branch

    def units_started(self, units: Sequence[StartingUnit]) -> None:
        for u in units:
            self._close(u.key)
            log_dir = self.unit_dir(u.key)
            for old in log_dir.glob("events.out.tfevents.*"):  # an earlier attempt's: rewritten below
                old.unlink()
            writer = self.writers[u.key] = self.summary_writer(log_dir=str(log_dir))
            for point in u.history:
                self._write(writer, point)

    def evaluated(self, key: UnitKey, point: EvalPoint) -> None:
        self._write(self.writers[key], point)

    def unit_finished(self, key: UnitKey, record: UnitRecord) -> None:
        self._close(key)

    def run_finished(self, records: list[UnitRecord]) -> None:
        self.close()

    def close(self) -> None:
        for key in list(self.writers):
            self._close(key)

    def _close(self, key: UnitKey) -> None:
        writer = self.writers.pop(key, None)
        if writer is not None:
            writer.close()

    @staticmethod
    def _write(writer: Any, point: EvalPoint) -> None:
        for tag, field in SCALARS.items():
            value = getattr(point, field)
            if value is not None:
                writer.add_scalar(tag, value, point.iteration)
