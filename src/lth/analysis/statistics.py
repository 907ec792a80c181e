"""Ticket statistics: what the masks and weights of a run say about its tickets.

* **Sparsity per layer**: for every trial and level, each prunable layer's kept and total weights
  (level 0, the dense network, keeps everything).
* **Initial values of survivors vs pruned weights** (the paper's Appendix F: winning tickets'
  initial weights are further from zero than the pruned ones): at each level, theta0's values
  split by the level's mask, in units of the layer's standard deviation at initialisation (the
  std of all its theta0 weights), so layers pool. Summaries: mean |w|/std of survivors and of
  pruned weights, the fraction with |w| > std, and histograms on shared edges (:data:`EDGES`,
  pooled over layers and trials). Always theta0, also when a run rewinds to k > 0.
* **Mask overlap**: the Jaccard index |A n B| / |A u B| of the kept sets, over all prunable
  weights, between every pair of trials at each level (mean, min, max over pairs), beside the
  value two random masks of the same sizes would have, ab / (n(a + b) - ab) for sizes a, b of n
  weights (the ratio of the expectations E|A n B| = ab/n and E|A u B| = a + b - ab/n; the exact
  expected ratio differs from it by O(1/n)); and between consecutive levels of each trial, where
  IMP's masks are nested (checked), so it equals kept(L+1)/kept(L).
* **Movement**: how far each surviving weight moved during a unit's training, |w_final - w_start|
  in units of the layer's initial std: mean, median and 90th percentile per (level, branch), over
  trials. w_start is what the unit trained from: theta0, or theta_k when the run rewinds to k > 0,
  for the dense network, ticket and random_mask (under its own mask). reinit (a fresh draw that
  the run does not store) and the retraining branches (finetune, lr_rewind: a trained ticket) are
  left out.

Everything is computed from intact units' files and recorded inputs (:class:`RunStore`),
read-only. The pure functions take tensors; :func:`ticket_statistics` reads a run directory.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..store import RunStore, StoreError, UnitRecord

Tensors = dict[str, torch.Tensor]
#: Histogram edges of initial values, in units of the layer's initial std (values beyond fall
#: into the end bins).
EDGES = tuple(round(-4 + 0.2 * i, 1) for i in range(41))
#: Branches whose start weights a run directory holds (module docstring), besides the dense network.
MOVEMENT_BRANCHES = ("ticket", "random_mask")


class StatisticsWarning(UserWarning):
    """A file needed for a statistic is damaged or missing; what needs it is left out."""


# ---------------------------------------------------------------------- pure functions
def kept_count(mask: Tensors) -> int:
    return int(sum(int(m.sum()) for m in mask.values()))


def total_count(mask: Tensors) -> int:
    return int(sum(m.numel() for m in mask.values()))


def jaccard(a: Tensors, b: Tensors) -> float:
    """|A n B| / |A u B| of two masks' kept sets over the same names (1.0 for two empty sets)."""
    if a.keys() != b.keys():
        raise ValueError(f"masks over different parameters: {sorted(a.keys() ^ b.keys())}")
    inter = sum(int((a[k] & b[k]).sum()) for k in a)
    union = sum(int((a[k] | b[k]).sum()) for k in a)
    return inter / union if union else 1.0


def random_jaccard(n: int, a: int, b: int) -> float:
    """The Jaccard index of two independent uniformly random subsets of sizes ``a`` and ``b`` of
    ``n`` items, as the ratio of expectations ab / (n(a + b) - ab) (module docstring)."""
    if not (n > 0 and 0 <= a <= n and 0 <= b <= n):
        raise ValueError(f"sizes a={a}, b={b} must lie in [0, n] with n={n} > 0")
    den = n * (a + b) - a * b
    return a * b / den if den else 1.0


def nested(inner: Tensors, outer: Tensors) -> bool:
    """Whether every weight ``inner`` keeps, ``outer`` keeps too."""
    return all(not bool((inner[k] & ~outer[k]).any()) for k in inner)


def init_split(theta0: Tensors, mask: Tensors) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, (survivors, pruned) initial values in units of the layer's initial std."""
    out = {}
    for name, m in mask.items():
        w = theta0[name].detach().double().flatten()
        std = float(w.std()) or 1.0
        keep = m.flatten().bool()
        out[name] = (w[keep] / std, w[~keep] / std)
    return out


def movement(start: Tensors, final: Tensors, mask: Tensors, theta0: Tensors) -> torch.Tensor:
    """|final - start| of every surviving weight in units of its layer's initial (theta0) std,
    concatenated over layers."""
    parts = []
    for name, m in mask.items():
        std = float(theta0[name].double().std()) or 1.0
        keep = m.flatten().bool()
        delta = (final[name].double().flatten() - start[name].double().flatten())[keep]
        parts.append(delta.abs() / std)
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def histogram(values: torch.Tensor) -> tuple[int, ...]:
    """Counts of ``values`` between :data:`EDGES` (values beyond fall into the end bins)."""
    counts, _ = np.histogram(np.clip(values.numpy(), EDGES[0], EDGES[-1]), bins=np.array(EDGES))
    return tuple(int(c) for c in counts)


# ---------------------------------------------------------------------- records
@dataclass(frozen=True)
class LayerSparsity:
    trial: int
    level: int
    layer: str
    kept: int
    total: int

    @property
    def fraction(self) -> float:
        return self.kept / self.total if self.total else 0.0


@dataclass(frozen=True)
class InitValues:
    """theta0's values split by one level's masks, pooled over layers and trials (units of std)."""

    level: int
    weights_remaining: float
    survivors: int
    pruned: int
    survivors_mean_abs: float
    pruned_mean_abs: float | None  # None at level 0: nothing is pruned
    survivors_above_std: float  # fraction with |w| > std
    pruned_above_std: float | None
    survivors_hist: tuple[int, ...]  # counts between EDGES
    pruned_hist: tuple[int, ...]


@dataclass(frozen=True)
class Overlap:
    """Jaccard indices of kept sets at one level: between trials, and with the previous level."""

    level: int
    weights_remaining: float
    trials_mean: float | None  # over pairs of trials; None with one trial
    trials_min: float | None
    trials_max: float | None
    random: float  # two random masks of these sizes (random_jaccard), mean over the pairs
    previous_level: float | None  # mean over trials of Jaccard(level, level - 1); None at level 0
    nested: bool | None  # every trial's mask lies inside its previous level's


@dataclass(frozen=True)
class Movement:
    level: int
    branch: str  # "dense" at level 0
    weights_remaining: float
    units: int
    mean: float
    median: float
    p90: float


@dataclass
class TicketStatistics:
    """Every statistic of one run directory (module docstring)."""

    run: str
    rewind_iteration: int
    sparsity: list[LayerSparsity] = field(default_factory=list)
    init: list[InitValues] = field(default_factory=list)
    overlap: list[Overlap] = field(default_factory=list)
    movement: list[Movement] = field(default_factory=list)
    edges: tuple[float, ...] = EDGES
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for row, src in zip(d["sparsity"], self.sparsity):
            row["fraction"] = src.fraction
        return d


# ---------------------------------------------------------------------- from a run directory
def _load(what: str, fn: Callable[[], Any], notes: list[str]) -> Any:
    try:
        return fn()
    except (StoreError, OSError, RuntimeError, ValueError) as e:
        msg = f"{what} cannot be read ({e}); it is left out of the statistics"
        warnings.warn(StatisticsWarning(msg), stacklevel=3)
        notes.append(msg)
        return None


def ticket_statistics(run_dir: Path, records: Sequence[UnitRecord] | None = None) -> TicketStatistics:
    """Every statistic of a run directory's intact files (module docstring). A damaged or missing
    file leaves out what needs it, with a :class:`StatisticsWarning` naming it; a folder that is
    not a run directory is a :class:`StoreError`. ``records``: the run's intact finished units
    where the caller has just checked them (:meth:`RunStore.survey`), so they are not checked again."""
    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"{run_dir} is not a readable lth run directory (config.json: {type(e).__name__})") from None
    k = int(config.get("lottery", {}).get("rewind_iteration", 0))
    store = RunStore(run_dir)
    stats = TicketStatistics(run=run_dir.resolve().name, rewind_iteration=k)
    notes = stats.notes
    records = [r for r in (store.records() if records is None else records) if r.ok]
    trials = sorted({r.trial for r in records})
    levels = sorted({r.level for r in records})
    theta0 = {t: _load(f"theta0 of trial {t}", lambda t=t: store.load_theta0(t), notes) for t in trials}
    masks: dict[tuple[int, int], Tensors] = {}
    for t in trials:
        for lv in levels[1:] if levels and levels[0] == 0 else levels:
            m = _load(f"the level {lv} mask of trial {t}", lambda t=t, lv=lv: store.load_level_mask(t, lv), notes)
            if m is not None:
                masks[(t, lv)] = {n: v.bool() for n, v in m.items()}
    names = next((list(m) for m in masks.values()), None)
    if names is None:
        notes.append("no pruned level has a recorded mask yet: there is nothing to describe")
        return stats
    for t in trials:  # level 0 keeps every prunable weight
        if theta0.get(t) is not None:
            masks[(t, 0)] = {n: torch.ones_like(theta0[t][n], dtype=torch.bool) for n in names}
    _sparsity(stats, masks, names)
    _init(stats, masks, theta0, trials, levels)
    _overlap(stats, masks, trials, levels)
    _movement(stats, store, masks, theta0, trials, levels, k, {r.key for r in records})
    return stats


def _sparsity(stats: TicketStatistics, masks: dict, names: list[str]) -> None:
    for (t, lv), m in sorted(masks.items()):
        for name in names:
            stats.sparsity.append(LayerSparsity(t, lv, name, int(m[name].sum()), m[name].numel()))


def _init(stats: TicketStatistics, masks: dict, theta0: dict, trials: list[int], levels: list[int]) -> None:
    for lv in levels:
        surv, pruned = [], []
        for t in trials:
            if (t, lv) in masks and theta0.get(t) is not None:
                for s, p in init_split(theta0[t], masks[(t, lv)]).values():
                    surv.append(s)
                    pruned.append(p)
        if not surv:
            continue
        s, p = torch.cat(surv), torch.cat(pruned)
        stats.init.append(InitValues(
            level=lv, weights_remaining=len(s) / (len(s) + len(p)), survivors=len(s), pruned=len(p),
            survivors_mean_abs=float(s.abs().mean()), pruned_mean_abs=float(p.abs().mean()) if len(p) else None,
            survivors_above_std=float((s.abs() > 1).double().mean()),
            pruned_above_std=float((p.abs() > 1).double().mean()) if len(p) else None,
            survivors_hist=histogram(s), pruned_hist=histogram(p)))


def _overlap(stats: TicketStatistics, masks: dict, trials: list[int], levels: list[int]) -> None:
    for lv in levels:
        here = [masks[(t, lv)] for t in trials if (t, lv) in masks]
        if not here:
            continue
        n = total_count(here[0])
        pairs = [(a, b) for i, a in enumerate(here) for b in here[i + 1:]]
        js = [jaccard(a, b) for a, b in pairs]
        sizes = [kept_count(m) for m in here]
        rand = ([random_jaccard(n, kept_count(a), kept_count(b)) for a, b in pairs]
                or [random_jaccard(n, sizes[0], sizes[0])])
        prev = [(masks[(t, lv)], masks[(t, lv - 1)]) for t in trials
                if lv > 0 and (t, lv) in masks and (t, lv - 1) in masks]
        stats.overlap.append(Overlap(
            level=lv, weights_remaining=sum(sizes) / len(sizes) / n,
            trials_mean=sum(js) / len(js) if js else None, trials_min=min(js) if js else None,
            trials_max=max(js) if js else None, random=sum(rand) / len(rand),
            previous_level=sum(jaccard(a, b) for a, b in prev) / len(prev) if prev else None,
            nested=all(nested(a, b) for a, b in prev) if prev else None))


def _movement(stats: TicketStatistics, store: RunStore, masks: dict, theta0: dict, trials: list[int],
              levels: list[int], k: int, done: set[tuple[int, int, str]]) -> None:
    notes = stats.notes
    starts = {t: theta0.get(t) if k == 0 else
              _load(f"the rewind point (iteration {k}) of trial {t}", lambda t=t: store.load_rewind(t), notes)
              for t in trials}
    for lv in levels:
        for branch in (("ticket",) if lv == 0 else MOVEMENT_BRANCHES):
            deltas, fractions = [], []
            for t in trials:
                if theta0.get(t) is None or (t, lv, branch) not in done:
                    continue
                start = theta0[t] if lv == 0 else starts.get(t)
                mask = masks.get((t, lv))
                if branch == "random_mask":
                    own = _load(f"the random mask of trial {t} level {lv}",
                                lambda t=t, lv=lv: store.load_unit_mask(t, lv, "random_mask"), notes)
                    mask = None if own is None else {n: v.bool() for n, v in own.items()}
                final = _load(f"the trained weights of trial {t} level {lv} {branch}",
                              lambda t=t, lv=lv, b=branch: store.load_final(t, lv, b), notes)
                if start is None or mask is None or final is None:
                    continue
                deltas.append(movement(start, final, mask, theta0[t]))
                fractions.append(kept_count(mask) / total_count(mask))
            if not deltas:
                continue
            d = torch.cat(deltas).numpy()
            stats.movement.append(Movement(
                level=lv, branch="dense" if lv == 0 else branch, weights_remaining=sum(fractions) / len(fractions),
                units=len(deltas), mean=float(d.mean()), median=float(np.median(d)),
                p90=float(np.percentile(d, 90))))
