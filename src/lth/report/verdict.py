"""The answer a run gives to the paper's question: did IMP find winning tickets, down to what size?

Computed from the aggregated rows (:func:`lth.report.tables.aggregate`) and nothing else, so every
number it states is one the results table shows.

* **The bar.** The dense network's test accuracy at early stop, over its trials: its minimum less
  a tolerance the user sets (``tolerance``, percentage points, default 0). With one trial the band
  is a point, and a ticket must reach the dense accuracy less the tolerance.
* **Matching.** A pruned level's ticket matches when its mean test accuracy at early stop (over
  trials) is at or above the bar. Tickets are winning "down to" the smallest fraction of weights
  such that every level from the dense network down to it matches (the paper's reading of its
  Figs. 3-5); levels below that which match again are named separately. Means that differ from
  the bar only by float rounding (:data:`EPS`) count as at it.
* **Controls.** For each control branch (reinit, random_mask, and any other non-ticket branch
  present), the largest fraction of weights at which its mean falls below the bar: "from there on
  it does worse than dense" (the paper: reinitialised and randomly pruned networks fall below
  the dense accuracy sooner than tickets).
* **Speed.** At the best ticket level (highest mean test accuracy at early stop among pruned
  levels; the smaller network on ties) the early-stop speed-up of the ticket over the dense
  network and over reinit at the same level: their mean early-stop iteration divided by the
  ticket's (the paper: winning tickets learn faster).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .tables import Row, Stat, branch_rank

#: Branches that are the ticket itself rather than a control.
TICKET = "ticket"
#: Accuracies are fractions of a test set, averaged: two that are equal as fractions may differ
#: in the last bits of their float means. Closer than this they are equal ("at the bar").
EPS = 1e-9


@dataclass(frozen=True)
class ControlFinding:
    """Where one control branch falls below the bar: its first level (largest fraction of
    weights) under it, or None if it never does at the levels measured."""

    branch: str
    first_below: Row | None
    levels: int


@dataclass(frozen=True)
class Verdict:
    """What a run's numbers say about winning tickets (module docstring: the exact rules)."""

    run: str
    dense: Stat  # test accuracy at early stop (%) of the dense network over trials
    tolerance: float  # percentage points below the dense minimum that still count as matching
    pruned_levels: int  # ticket levels measured
    match_down_to: Row | None  # the smallest ticket level of the unbroken run of matches from dense
    first_miss: Row | None  # the first ticket level below the bar (None: every level matches)
    later_matches: tuple[Row, ...] = ()  # ticket levels after the first miss that match again
    controls: tuple[ControlFinding, ...] = ()
    best: Row | None = None  # the best ticket level (highest mean test accuracy at early stop)
    speedup_vs_dense: float | None = None  # dense early-stop iteration / ticket's, at ``best``
    speedup_vs_reinit: float | None = None  # reinit's / ticket's, at ``best``
    notes: tuple[str, ...] = field(default=())
    gap: bool = False  # a ticket level between level 1 and the last finished one has not finished
    planned_levels: int | None = None  # the run's configured levels (lottery.levels), when known

    @property
    def bar(self) -> float:
        return self.dense.lo - self.tolerance

    @property
    def found(self) -> bool:
        """Whether at least the first pruned level's ticket matches the dense network."""
        return self.match_down_to is not None

    def lines(self) -> list[str]:
        """The verdict as sentences, one per line, the answer first."""
        d = self.dense
        band = (f"{d.mean:.2f}%" if d.n == 1 else f"{d.lo:.2f}-{d.hi:.2f}% over {d.n} trials")
        tol = f", less a tolerance of {self.tolerance:g} points" if self.tolerance else ""
        out = []
        if self.pruned_levels == 0:
            return [f"{self.run}: no pruned level has finished yet; the dense network reaches {band} test "
                    "accuracy at early stop"]
        if self.found:
            m = self.match_down_to
            assert m is not None
            head = (f"{self.run}: winning tickets found down to {_pct(m.weights_remaining)} of weights "
                    f"(level {m.level}): the ticket's test accuracy at early stop stays at or above the dense "
                    f"network's ({band}{tol}) at every level down to it")
            if self.first_miss is None:
                if self.gap:
                    head += " (the next level has not finished)"
                elif self.planned_levels and self.planned_levels > m.level:
                    head += (f" (levels {m.level + 1}-{self.planned_levels} of the run have not finished)"
                             if self.planned_levels > m.level + 1 else
                             f" (level {self.planned_levels} of the run has not finished)")
                else:
                    head += " (every pruned level measured)"
            else:
                f = self.first_miss
                head += (f"; at {_pct(f.weights_remaining)} it falls below "
                         f"({f.early_stop_test_accuracy.mean:.2f}%)")
            out.append(head)
        else:
            f = self.first_miss
            assert f is not None
            out.append(f"{self.run}: no winning ticket: already at {_pct(f.weights_remaining)} of weights "
                       f"(level {f.level}) the ticket's test accuracy at early stop "
                       f"({f.early_stop_test_accuracy.mean:.2f}%) is below the dense network's ({band}{tol})")
        if self.later_matches:
            again = ", ".join(_pct(r.weights_remaining) for r in self.later_matches)
            out.append(f"  the ticket matches again at {again} (not counted: the run of matches is broken above)")
        for c in self.controls:
            if c.first_below is None:
                out.append(f"  {c.branch} stays at or above the dense band at all {c.levels} levels measured")
            else:
                r = c.first_below
                out.append(f"  {c.branch} falls below the dense band from {_pct(r.weights_remaining)} of weights "
                           f"(level {r.level}: {r.early_stop_test_accuracy.mean:.2f}%)")
        if self.best is not None:
            b = self.best
            parts = []
            if self.speedup_vs_dense is not None:
                parts.append(f"{self.speedup_vs_dense:.2f}x the dense network's")
            if self.speedup_vs_reinit is not None:
                parts.append(f"{self.speedup_vs_reinit:.2f}x reinit's")
            speed = f"; it reaches early stop at iteration {b.early_stop_iteration.mean:.0f}"
            if parts:
                speed += " (speed-up: " + ", ".join(parts) + ")"
            out.append(f"  best ticket level: {_pct(b.weights_remaining)} of weights, "
                       f"{b.early_stop_test_accuracy.mean:.2f}% test accuracy at early stop{speed}")
        out.extend(f"  {n}" for n in self.notes)
        return out

    def text(self) -> str:
        return "\n".join(self.lines()) + "\n"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.3g}%"


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def verdict(rows: list[Row], run: str = "run", tolerance: float = 0.0, planned_levels: int | None = None) -> Verdict:
    """The verdict of one run's aggregated rows (module docstring: the rules). ``tolerance`` is in
    percentage points of test accuracy; a negative one is a ValueError. ``planned_levels``: the
    run's configured number of levels, so that a run still training says which levels are to come."""
    if tolerance < 0:
        raise ValueError(f"tolerance = {tolerance!r}: must be >= 0 percentage points")
    dense = next((r for r in rows if r.level == 0), None)
    if dense is None:
        raise ValueError(f"{run}: the dense network (level 0) has not finished; no verdict without it")
    bar = dense.early_stop_test_accuracy.lo - tolerance
    by_branch: dict[str, list[Row]] = {}
    for r in rows:
        if r.level > 0:
            by_branch.setdefault(r.branch, []).append(r)
    tickets = sorted(by_branch.pop(TICKET, []), key=lambda r: r.level)
    notes = []
    levels = [r.level for r in tickets]
    if levels and levels != list(range(1, len(levels) + 1)):
        missing = sorted(set(range(1, max(levels) + 1)) - set(levels))
        notes.append(f"ticket levels {', '.join(map(str, missing))} have not finished: the run of matches "
                     "stops before the first of them")
    match_down_to = first_miss = None
    later: list[Row] = []
    for i, r in enumerate(tickets):
        if r.level != i + 1:  # a gap: nothing can be said past it
            break
        if r.early_stop_test_accuracy.mean >= bar - EPS:
            if first_miss is None:
                match_down_to = r
            else:
                later.append(r)
        elif first_miss is None:
            first_miss = r
    controls = []
    for branch, rs in sorted(by_branch.items(), key=lambda kv: (branch_rank(kv[0]), kv[0])):
        rs = sorted(rs, key=lambda r: r.level)
        below = next((r for r in rs if r.early_stop_test_accuracy.mean < bar - EPS), None)
        controls.append(ControlFinding(branch, below, len(rs)))
    best = max(tickets, key=lambda r: (r.early_stop_test_accuracy.mean, r.level), default=None)
    vs_dense = vs_reinit = None
    if best is not None:
        es = best.early_stop_iteration.mean
        vs_dense = _ratio(dense.early_stop_iteration.mean, es)
        reinit = next((r for r in by_branch.get("reinit", []) if r.level == best.level), None)
        if reinit is not None:
            vs_reinit = _ratio(reinit.early_stop_iteration.mean, es)
        at_end = [r for r in (dense, best, reinit) if r is not None and r.final_iteration is not None
                  and r.early_stop_iteration.lo >= r.final_iteration]
        if len(at_end) == len([r for r in (dense, best, reinit) if r is not None]):
            notes.append("every unit compared stops at its last evaluation: the schedule is too short for the "
                         "early-stop iteration to measure speed")
    return Verdict(run=run, dense=dense.early_stop_test_accuracy, tolerance=tolerance, pruned_levels=len(tickets),
                   match_down_to=match_down_to, first_miss=first_miss, later_matches=tuple(later),
                   controls=tuple(controls), best=best, speedup_vs_dense=vs_dense, speedup_vs_reinit=vs_reinit,
                   notes=tuple(notes), planned_levels=planned_levels,
                   gap=bool(levels) and levels != list(range(1, len(levels) + 1)))
