"""The figures a reader of the paper expects, for one run directory or several on the same axes.

* ``early_stop_accuracy``, ``final_accuracy``, ``early_stop_iteration``: against the percent of
  weights remaining (log scale, dense on the left), mean over trials with min/max bars, one line
  per branch (the dense network is every branch's first point); the dense network's min/max band
  is shaded on the accuracy figures of a single run. With several runs, colour is the run and the
  marker/line style the branch. One-shot and iterative pruning share the axes whenever both are
  present (a ``oneshot`` branch, or a one-shot run beside an iterative one).
* ``curves``: the paper's Fig. 3: test accuracy and validation loss against training iteration for
  chosen levels of the ticket branch, mean over trials with a min/max band. Where a run measured
  the test split only at new validation minima (``--test-eval best``), the test-accuracy curve has
  points only there.

Every figure is written as PNG and SVG (or the formats asked for) through an atomic rename.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .figures import BRANCH_STYLE, printable, pyplot, save_figure
from .runs import RunData
from .tables import ReportError, Row, branch_rank

FORMATS = ("png", "svg")
DPI = 100
#: (row attribute, y label, file stem) of the three summary figures.
SUMMARY = (
    ("early_stop_test_accuracy", "test accuracy at early stop (%)", "early_stop_accuracy"),
    ("final_test_accuracy", "test accuracy at the end of training (%)", "final_accuracy"),
    ("early_stop_iteration", "early-stop iteration (min. validation loss)", "early_stop_iteration"),
)
RUN_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
              "tab:gray", "tab:olive", "tab:cyan")
LINESTYLES = {"ticket": "-", "reinit": "--", "random_mask": ":", "oneshot": "-.", "finetune": (0, (5, 1, 1, 1)),
              "lr_rewind": (0, (3, 1, 1, 1, 1, 1))}


def _pyplot():
    return pyplot(" (or lth report --no-figures)")


def _branches(rows: list[Row]) -> list[str]:
    return sorted({r.branch for r in rows if r.level > 0}, key=branch_rank)


def _x_axis(ax, xs: list[float]) -> None:
    xs = sorted(set(xs), reverse=True)
    ticks = xs[:: max(1, len(xs) // 8)]
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("percent of weights remaining")
    ax.grid(True, which="both", alpha=0.3)


def summary_figures(runs: Sequence[RunData], out_dir: Path, formats: Sequence[str] = FORMATS) -> dict[str, list[Path]]:
    """The three figures against weights remaining (module docstring); {stem: files written}."""
    plt = _pyplot()
    written = {}
    several = len(runs) > 1
    for key, ylabel, stem in SUMMARY:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        xs: list[float] = []
        for i, run in enumerate(runs):
            dense = [r for r in run.rows if r.level == 0]
            if not several and dense and key != "early_stop_iteration":
                s = getattr(dense[0], key)
                ax.axhspan(s.lo, s.hi, color="gray", alpha=0.15, lw=0, label="dense min-max")
            for branch in _branches(run.rows):
                rs = dense + sorted((r for r in run.rows if r.branch == branch), key=lambda r: r.level)
                x = [100 * r.weights_remaining for r in rs]
                stats = [getattr(r, key) for r in rs]
                y = [s.mean for s in stats]
                err = [[s.mean - s.lo for s in stats], [s.hi - s.mean for s in stats]]
                color, marker = BRANCH_STYLE.get(branch, ("gray", "x"))
                style = "-"
                label = branch
                if several:
                    color = RUN_COLORS[i % len(RUN_COLORS)]
                    style = LINESTYLES.get(branch, "-")
                    label = f"{run.label}: {branch}"
                ax.errorbar(x, y, yerr=err, color=color, marker=marker, ms=4, capsize=2, ls=style, lw=1.2,
                            label=printable(label))
                xs += x
        _x_axis(ax, xs or [100.0])
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="small")
        title = runs[0].label if not several else " vs ".join(r.label for r in runs)
        ax.set_title(printable(title), fontsize="medium")
        written[stem] = save_figure(fig, out_dir / stem, formats, DPI)
    return written


def default_curve_levels(run: RunData, n: int = 5) -> list[int]:
    """Up to ``n`` ticket levels spread evenly from the dense network to the sparsest finished one
    (the paper's Fig. 3 shows 100%, 51%, 21%, 7% and 3.6% of weights)."""
    levels = sorted({lv for (_, lv, b) in run.curves if b == "ticket"})
    if len(levels) <= n:
        return levels
    picks = {levels[round(i * (len(levels) - 1) / (n - 1))] for i in range(n)}
    return sorted(picks)


def _curve(series: list[list[dict]], field: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Mean, min and max over trials at each iteration where any trial measured ``field``."""
    at: dict[int, list[float]] = {}
    for evals in series:
        for e in evals:
            v = e.get(field)
            if v is not None:
                at.setdefault(int(e["iteration"]), []).append(float(v))
    its = sorted(at)
    scale = 100.0 if field.endswith("accuracy") else 1.0
    return (its, [scale * sum(at[i]) / len(at[i]) for i in its], [scale * min(at[i]) for i in its],
            [scale * max(at[i]) for i in its])


#: The test-accuracy panel of the training curves zooms in on training after this fraction of its
#: iterations: the untrained network's 10% would otherwise squash the curves into a line at the
#: top, where the paper's Fig. 3 shows the differences between levels.
ZOOM_AFTER = 0.02


def accuracy_limits(curves: Sequence[tuple[Sequence[int], Sequence[float]]],
                    after: float = ZOOM_AFTER) -> tuple[float, float] | None:
    """The y range of the test-accuracy panel: from the lowest value at or after ``after`` of the
    last iteration to the highest value, with 5% of the span (at least 0.1 points) as margin.
    None when no curve has a point there (then matplotlib chooses)."""
    last = max((its[-1] for its, _ in curves if its), default=0)
    late = [v for its, vals in curves for i, v in zip(its, vals) if i >= after * last]
    every = [v for _, vals in curves for v in vals]
    if not late:
        return None
    lo, hi = min(late), max(every)
    pad = max(0.05 * (hi - lo), 0.1)
    return lo - pad, hi + pad


def curves_figure(run: RunData, out_base: Path, levels: Sequence[int] | None = None, branch: str = "ticket",
                  formats: Sequence[str] = FORMATS) -> list[Path]:
    """The paper's Fig. 3 for one run (module docstring). ``levels``: which levels (default
    :func:`default_curve_levels`); levels without a finished unit are a :class:`ReportError`."""
    plt = _pyplot()
    have = sorted({lv for (_, lv, b) in run.curves if b == branch or lv == 0})
    levels = list(levels) if levels is not None else default_curve_levels(run)
    missing = [lv for lv in levels if lv not in have]
    if missing:
        raise ReportError(f"--curve-levels {','.join(map(str, levels))}: level(s) {', '.join(map(str, missing))} of "
                          f"{run.name} have no finished {branch} unit; choose from {', '.join(map(str, have))}")
    weights = {r.level: r.weights_remaining for r in run.rows}
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    accuracy_curves = []
    for j, lv in enumerate(levels):
        b = "ticket" if lv == 0 else branch
        series = [ev for (t, level, br), ev in sorted(run.curves.items()) if level == lv and br == b]
        color = cmap(j / max(1, len(levels) - 1) * 0.9)
        label = f"{100 * weights.get(lv, 1.0):.3g}%" + (" (dense)" if lv == 0 else "")
        for ax, field in zip(axes, ("test_accuracy", "val_loss")):
            its, mean, lo, hi = _curve(series, field)
            if field == "test_accuracy":
                accuracy_curves.append((its, mean))
            sparse = len(its) < 0.5 * max(len(ev) for ev in series)  # test measured only at new minima
            ax.plot(its, mean, color=color, lw=1.2, marker="o" if sparse else None, ms=3, label=label)
            if len(series) > 1:
                ax.fill_between(its, lo, hi, color=color, alpha=0.2, lw=0)
    axes[1].set_yscale("log")  # the first evaluations' loss would flatten the rest of the curve
    limits = accuracy_limits(accuracy_curves)
    accuracy_label = "test accuracy (%)"
    if limits is not None and min(v for _, vals in accuracy_curves for v in vals) < limits[0]:
        axes[0].set_ylim(*limits)
        accuracy_label = f"test accuracy (%; first {100 * ZOOM_AFTER:g}% of training below)"
    for ax, ylabel in zip(axes, (accuracy_label, "validation loss (log scale)")):
        ax.set_xlabel("training iteration")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(title="weights remaining", fontsize="small")
    fig.suptitle(printable(f"{run.label}: {branch} training curves"), fontsize="medium")
    return save_figure(fig, out_base, formats, DPI)
