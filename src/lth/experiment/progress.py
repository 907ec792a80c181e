"""Progress of a running experiment as events, and the plain-line display of them.

:class:`~lth.experiment.Lottery` reports what it does to a :class:`ProgressSink`; it never prints
itself. The sink decides what is shown: :class:`PlainProgress` writes the throttled plain lines
(which unit, which iteration, current metrics, ETA) a log file or a pipe gets, the command line
puts a live terminal display in its place (``lth.cli.live``), ``--quiet`` a bare
:class:`ProgressSink`, and :class:`~lth.experiment.tensorboard.TensorBoardProgress` writes every
unit's curves beside them (:class:`Sinks` sends each event to several sinks).

:class:`Progress` is the run's plan and clock: how many units and iterations are left, how many
are done, and the ETA of the whole run from them; every sink gets it in
:meth:`ProgressSink.run_started`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..config import ExperimentConfig
from ..store import UnitRecord
from ..training import EvalPoint
from .units import UnitKey

Log = Callable[[str], None]


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    """Counts the iterations left in the whole run and formats progress lines and the ETA.

    The driver adds each group's iterations to ``done_iters`` when the group has trained; a
    display adds the iterations its current units have done since they started (``eta``)."""

    def __init__(self, cfg: ExperimentConfig, units: list[UnitKey], done: Callable[[UnitKey], bool]):
        self.cfg = cfg
        self.units = units
        k = cfg.lottery.rewind_iteration
        self.todo_iters = sum(cfg.train.iterations - (0 if u.level == 0 else k) for u in units if not done(u))
        self.finished_units = sum(1 for u in units if done(u))
        self.done_iters = 0
        self.t0 = time.perf_counter()
        self.last_print = 0.0

    def resumed(self, iters: int) -> None:
        """A group resumed from checkpoints: ``iters`` of its iterations were trained before this
        process began, so they are neither left to do nor part of this process's rate."""
        self.todo_iters -= iters

    @property
    def total_units(self) -> int:
        return len(self.units)

    def due(self, min_interval: float = 15.0) -> bool:
        """Throttle progress lines to one every ``min_interval`` seconds."""
        now = time.perf_counter()
        if now - self.last_print >= min_interval:
            self.last_print = now
            return True
        return False

    def eta(self, current_iters: int) -> str:
        done = self.done_iters + current_iters
        if done <= 0:
            return "?"
        el = time.perf_counter() - self.t0
        return fmt_seconds(el / done * max(self.todo_iters - done, 0))

    def unit_label(self, key: UnitKey, weights: float) -> str:
        L = self.cfg.lottery
        return (f"[trial {key.trial + 1}/{L.trials} level {key.level}/{L.levels} {key.branch:<11} "
                f"{100 * weights:6.2f}% weights]")

    def eval_line(self, head: str, points: list[EvalPoint], first: int, n_units: int) -> str:
        """One progress line for a group's latest evaluation points (ranges over the units)."""

        def span(xs: list[float], fmt: str = "5.2f", unit: str = "%") -> str:
            lo, hi = format(min(xs), fmt), format(max(xs), fmt)
            return f"{lo}{unit}" if len(xs) == 1 else f"{lo}-{hi}{unit}"

        accs = [100 * q.test_accuracy for q in points if q.test_accuracy is not None]
        test = ""
        if accs:  # none when test_eval="best" and no unit reached a new validation minimum
            part = "" if len(accs) == len(points) else f" ({len(accs)}/{len(points)} units tested)"
            test = f"test_acc {span(accs)}{part} "
        it = points[-1].iteration
        return (f"{head} it {it:>6}/{self.cfg.train.iterations} "
                f"val_loss {span([q.val_loss for q in points], '.4f', '')} "
                f"val_acc {span([100 * q.val_accuracy for q in points])} {test}"
                f"| ETA {self.eta((it - first) * n_units)}")


@dataclass(frozen=True)
class StartingUnit:
    """A unit about to train: where it (re)starts and what it has recorded already."""

    key: UnitKey
    weights: float  # fraction of prunable weights its mask keeps
    iteration: int  # the iteration training starts from: the branch's start, or the checkpoint's
    resumed: bool  # continues from a checkpoint
    #: Evaluations recorded before ``iteration`` (a resumed unit's checkpoint; empty otherwise);
    #: :meth:`ProgressSink.evaluated` reports only the ones after it.
    history: tuple[EvalPoint, ...] = ()


def done_line(label: str, record: UnitRecord) -> str:
    """The line that says how a unit ended: its early stop and final test accuracy, or its failure."""
    if not record.ok:
        return f"{label} FAILED: {record.error}; recorded as failed, other units continue"
    return (f"{label} done: early stop at it {record.early_stop_iteration}, test acc there "
            f"{100 * record.early_stop_test_accuracy:.2f}%, final {100 * record.final_test_accuracy:.2f}% "
            f"({fmt_seconds(record.train_seconds or 0.0)})")


class ProgressSink:
    """What a running :class:`~lth.experiment.Lottery` reports, in this order: ``run_started``
    once; then for each group of units that train together ``units_started``, ``evaluated`` for
    every new evaluation of each unit (interleaved over the group's units), and ``unit_finished``
    for each unit of the group; ``run_finished`` at the end. ``message`` (resume notes, repairs,
    warnings) may come at any time, before ``run_started`` too.

    Every method here does nothing: this class is the silent sink (``lth run --quiet``), and a
    sink overrides what it shows. ``close`` ends a display or flushes files; the caller that made
    the sink closes it, also when the run stops early (an error, Ctrl-C)."""

    def run_started(self, progress: Progress) -> None:
        """The run's plan: ``progress.total_units``, ``finished_units``, ``todo_iters``, its clock."""

    def units_started(self, units: Sequence[StartingUnit]) -> None:
        """A group of units starts (or resumes) training together."""

    def evaluated(self, key: UnitKey, point: EvalPoint) -> None:
        """A unit's new evaluation (validation, and test where measured)."""

    def unit_finished(self, key: UnitKey, record: UnitRecord) -> None:
        """A unit finished (``record.ok``) or failed; its record is stored."""

    def message(self, text: str) -> None:
        """A line for the user: the run directory, a resume note, a repair, a warning."""

    def run_finished(self, records: list[UnitRecord]) -> None:
        """Every unit has finished; ``records`` is the summary."""

    def close(self) -> None:
        """Release what the sink holds (a live display, open files); safe to call twice."""


class PlainProgress(ProgressSink):
    """Plain lines through ``log``: each unit's start and end, every message, and one line per
    group's evaluation at most every ``min_interval`` seconds, with the ETA of the whole run."""

    def __init__(self, log: Log = print, min_interval: float = 15.0):
        self.log = log
        self.min_interval = min_interval
        self.progress: Progress | None = None
        self.labels: dict[UnitKey, str] = {}
        self.group: dict[UnitKey, int] = {}  # the current group's units and their index in it
        self.head = ""
        self.first = 0
        self.latest: dict[int, EvalPoint] = {}

    def run_started(self, progress: Progress) -> None:
        self.progress = progress

    def units_started(self, units: Sequence[StartingUnit]) -> None:
        p = self._progress()
        for u in units:
            label = self.labels[u.key] = p.unit_label(u.key, u.weights)
            self.log(f"{label} resuming from checkpoint at iteration {u.iteration}" if u.resumed
                     else f"{label} training from iteration {u.iteration}")
        self.group = {u.key: i for i, u in enumerate(units)}
        self.first = units[0].iteration
        level = units[0].key.level
        self.head = (self.labels[units[0].key] if len(units) == 1
                     else f"[level {level}/{p.cfg.lottery.levels}, {len(units)} units at once]")
        self.latest = {}

    def evaluated(self, key: UnitKey, point: EvalPoint) -> None:
        p = self._progress()
        self.latest[self.group[key]] = point
        if len(self.latest) == len(self.group) and p.due(self.min_interval):
            self.log(p.eval_line(self.head, list(self.latest.values()), self.first, len(self.group)))

    def unit_finished(self, key: UnitKey, record: UnitRecord) -> None:
        self.log(done_line(self.labels[key], record))

    def message(self, text: str) -> None:
        self.log(text)

    def _progress(self) -> Progress:
        if self.progress is None:
            raise RuntimeError("run_started must come first")
        return self.progress


class Sinks(ProgressSink):
    """Every event to each of several sinks, in order (e.g. a display and TensorBoard files)."""

    def __init__(self, *sinks: ProgressSink):
        self.sinks = sinks

    def run_started(self, progress: Progress) -> None:
        for s in self.sinks:
            s.run_started(progress)

    def units_started(self, units: Sequence[StartingUnit]) -> None:
        for s in self.sinks:
            s.units_started(units)

    def evaluated(self, key: UnitKey, point: EvalPoint) -> None:
        for s in self.sinks:
            s.evaluated(key, point)

    def unit_finished(self, key: UnitKey, record: UnitRecord) -> None:
        for s in self.sinks:
            s.unit_finished(key, record)

    def message(self, text: str) -> None:
        for s in self.sinks:
            s.message(text)

    def run_finished(self, records: list[UnitRecord]) -> None:
        for s in self.sinks:
            s.run_finished(records)

    def close(self) -> None:
        """Closes every sink, even when one fails (the first error is raised after)."""
        error: BaseException | None = None
        for s in self.sinks:
            try:
                s.close()
            except BaseException as e:  # noqa: BLE001 - the other sinks still need closing
                error = error or e
        if error is not None:
            raise error
