"""Progress lines for a running experiment: which unit, which iteration, current metrics, ETA."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..config import ExperimentConfig
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
    """Counts the iterations left in the whole run and prints throttled progress lines."""

    def __init__(self, cfg: ExperimentConfig, units: list[UnitKey], done: Callable[[UnitKey], bool]):
        self.cfg = cfg
        self.units = units
        k = cfg.lottery.rewind_iteration
        self.todo_iters = sum(cfg.train.iterations - (0 if u.level == 0 else k) for u in units if not done(u))
        self.finished_units = sum(1 for u in units if done(u))
        self.done_iters = 0
        self.t0 = time.perf_counter()
        self.last_print = 0.0

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
