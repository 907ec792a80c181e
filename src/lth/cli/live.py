"""The live terminal display of ``lth run`` (rich): a :class:`~lth.experiment.ProgressSink`.

One line for the whole run (units done of all units, a bar of the iterations done, the elapsed
time and the ETA of the whole run, computed as the plain lines' ETA is) and one line per unit
training now (its iteration, validation loss and accuracy, and test accuracy where measured).
Messages, resume notes and each unit's result line print above the display and stay in the
terminal's scrollback. ``lth run`` uses it only when standard output is a terminal (not
``--quiet``, not ``TERM=dumb``); elsewhere it writes :class:`~lth.experiment.PlainProgress`'s lines.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, Task, TaskID, TextColumn
from rich.progress import Progress as Bars
from rich.table import Column
from rich.text import Text

from ..experiment.progress import Progress, ProgressSink, StartingUnit, done_line, fmt_seconds
from ..experiment.units import UnitKey
from ..store import UnitRecord
from ..training import EvalPoint


class _Status(ProgressColumn):
    """The text right of a bar: the whole run's elapsed time and ETA, or a unit's metrics."""

    def __init__(self, live: LiveProgress):
        super().__init__(table_column=Column(no_wrap=True, overflow="ellipsis"))  # one line per unit
        self.live = live

    def render(self, task: Task) -> Text:
        if task.id == self.live.overall:
            return Text(self.live.overall_status())
        return Text(task.fields.get("status", ""))


class LiveProgress(ProgressSink):
    """A rich live display of a running experiment (module docstring)."""

    def __init__(self, console: Console | None = None, refresh_per_second: float = 4.0):
        self.console = console or Console(highlight=False)
        self.refresh_per_second = refresh_per_second
        self.bars: Bars | None = None
        self.progress: Progress | None = None
        self.overall: TaskID | None = None
        self.overall_total = 1
        self.units: dict[UnitKey, tuple[TaskID, str, int]] = {}  # task, label, start iteration
        self.finished_units = 0
        self.current_iters = 0  # iterations the units training now have done since they started
        self.latest: dict[UnitKey, int] = {}  # each training unit's latest evaluated iteration
        self.tested: dict[UnitKey, EvalPoint] = {}  # and its latest evaluation that measured the test split

    # ------------------------------------------------------------------ events
    def run_started(self, progress: Progress) -> None:
        self.progress = progress
        self.finished_units = progress.finished_units
        # stderr joins the display only where it is the same terminal (a file keeps its warnings)
        self.bars = Bars(TextColumn("{task.description}", markup=False), BarColumn(bar_width=16), _Status(self),
                         console=self.console, refresh_per_second=self.refresh_per_second,
                         redirect_stderr=_is_tty(sys.stderr))
        self.overall_total = max(progress.todo_iters, 1)
        self.overall = self.bars.add_task(self._units_text(), total=self.overall_total)
        self.bars.start()

    def units_started(self, units: Sequence[StartingUnit]) -> None:
        p, bars = self._require()
        for u in units:
            label = p.unit_label(u.key, u.weights)
            L = p.cfg.lottery  # the display's row: the label without brackets and "weights"
            row = (f"trial {u.key.trial + 1}/{L.trials} level {u.key.level}/{L.levels} {u.key.branch:<11} "
                   f"{100 * u.weights:6.2f}%")
            if u.resumed:
                self.message(f"{label} resuming from checkpoint at iteration {u.iteration}")
            tested = [q for q in u.history if q.test_accuracy is not None]
            if tested:
                self.tested[u.key] = tested[-1]
            last = u.history[-1] if u.history else None
            task = bars.add_task(row, total=max(p.cfg.train.iterations - u.iteration, 1),
                                 status=self._unit_status(u.key, last, u.iteration))
            self.units[u.key] = (task, label, u.iteration)
            self.latest[u.key] = u.iteration
        self._update_overall()  # a resumed group has shortened the work left

    def evaluated(self, key: UnitKey, point: EvalPoint) -> None:
        _, bars = self._require()
        task, _, first = self.units[key]
        self.current_iters += point.iteration - self.latest[key]
        self.latest[key] = point.iteration
        if point.test_accuracy is not None:
            self.tested[key] = point
        bars.update(task, completed=point.iteration - first, status=self._unit_status(key, point, point.iteration))
        self._update_overall()

    def unit_finished(self, key: UnitKey, record: UnitRecord) -> None:
        _, bars = self._require()
        task, label, first = self.units.pop(key)
        bars.remove_task(task)
        # The driver has counted the unit's iterations in progress.done_iters by now.
        self.current_iters -= self.latest.pop(key) - first
        self.tested.pop(key, None)
        self.finished_units += 1
        self.message(done_line(label, record))
        self._update_overall()

    def message(self, text: str) -> None:
        if self.bars is not None:
            # A print redraws the display as last refreshed (4 times a second): bring it up to
            # date first, so a finished unit's line never reappears below its own result line.
            self.bars.refresh()
        # Above a live display; no markup (labels hold [brackets]); the terminal wraps long lines.
        self.console.print(Text(text), soft_wrap=True)

    def run_finished(self, records: list[UnitRecord]) -> None:
        if self.bars is not None and self.overall is not None:
            self.bars.update(self.overall, completed=self.overall_total)
        self.close()

    def close(self) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.bars = None

    # ------------------------------------------------------------------ text
    def overall_status(self) -> str:
        p = self.progress
        if p is None:
            return ""
        elapsed = fmt_seconds(time.perf_counter() - p.t0)
        return f"{elapsed} elapsed | ETA {p.eta(self.current_iters)}"

    def _units_text(self) -> str:
        total = self.progress.total_units if self.progress is not None else 0
        return f"units {self.finished_units}/{total}"

    def _unit_status(self, key: UnitKey, point: EvalPoint | None, iteration: int) -> str:
        """A unit's iteration and latest metrics; with ``test_eval="best"`` the test split is
        measured only at some evaluations: the latest measured value then says where it is from."""
        p, _ = self._require()
        text = f"it {iteration:>6}/{p.cfg.train.iterations}"
        if point is None:
            return text
        text += f" val_loss {point.val_loss:.4f} val_acc {100 * point.val_accuracy:5.2f}%"
        tested = self.tested.get(key)
        if tested is not None and tested.test_accuracy is not None:
            text += f" test_acc {100 * tested.test_accuracy:5.2f}%"
            if tested.iteration != point.iteration:
                text += f" (it {tested.iteration})"
        return text

    def _update_overall(self) -> None:
        p, bars = self._require()
        if self.overall is not None:
            self.overall_total = max(p.todo_iters, 1)
            bars.update(self.overall, description=self._units_text(), total=self.overall_total,
                        completed=min(p.done_iters + self.current_iters, p.todo_iters))

    def _require(self) -> tuple[Progress, Bars]:
        if self.progress is None or self.bars is None:
            raise RuntimeError("run_started must come first")
        return self.progress, self.bars


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
