"""Ticket statistics (:mod:`lth.analysis.statistics`) as figures and tables for the report.

* ``statistics_layers``: each prunable layer's fraction of weights kept against the level (mean
  over trials; log scale).
* ``statistics_init``: histograms of theta0's values (units of the layer's initial std) of the
  survivors and of the pruned weights, at up to three levels (the paper's Appendix F).
* ``statistics_overlap``: the Jaccard index of the kept sets between trials against weights
  remaining, beside two random masks of the same sizes.
* ``statistics_movement``: how far survivors moved in training (mean and 90th percentile of
  |w_final - w_start| / initial std) against weights remaining, per branch.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from ..analysis.statistics import TicketStatistics
from .figures import BRANCH_STYLE, save_figure
from .paper import DPI, FORMATS, _pyplot, _x_axis


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%"


def statistics_tables(stats: TicketStatistics) -> dict[str, str]:
    """Markdown tables: ``init`` (survivors vs pruned initial values), ``overlap`` (Jaccard) and
    ``movement`` (survivors' movement), one row per level (and branch)."""
    init = ["| level | weights % | survivors mean abs(w)/std | pruned mean abs(w)/std | survivors abs(w) > std "
            "| pruned abs(w) > std |", "|---|---|---|---|---|---|"]
    for r in stats.init:
        pm = "-" if r.pruned_mean_abs is None else f"{r.pruned_mean_abs:.3f}"
        pa = "-" if r.pruned_above_std is None else f"{100 * r.pruned_above_std:.1f}%"
        init.append(f"| {r.level} | {100 * r.weights_remaining:.2f} | {r.survivors_mean_abs:.3f} | {pm} | "
                    f"{100 * r.survivors_above_std:.1f}% | {pa} |")
    over = ["| level | weights % | Jaccard between trials mean [min, max] | random masks | with previous level "
            "| nested |", "|---|---|---|---|---|---|"]
    for r in stats.overlap:
        tr = "-" if r.trials_mean is None else f"{r.trials_mean:.4f} [{r.trials_min:.4f}, {r.trials_max:.4f}]"
        pv = "-" if r.previous_level is None else f"{r.previous_level:.4f}"
        ne = "-" if r.nested is None else ("yes" if r.nested else "no")
        over.append(f"| {r.level} | {100 * r.weights_remaining:.2f} | {tr} | {r.random:.4f} | {pv} | {ne} |")
    move = ["| level | weights % | branch | units | mean | median | 90th percentile |",
            "|---|---|---|---|---|---|---|"]
    for r in stats.movement:
        move.append(f"| {r.level} | {100 * r.weights_remaining:.2f} | {r.branch} | {r.units} | {r.mean:.3f} | "
                    f"{r.median:.3f} | {r.p90:.3f} |")
    return {name: "\n".join(lines) + "\n" for name, lines in (("init", init), ("overlap", over), ("movement", move))}


def statistics_csv(stats: TicketStatistics) -> dict[str, str]:
    """CSV text per statistic: ``layers``, ``init``, ``overlap``, ``movement`` (fractions, not %)."""
    out = {}
    for name, rows, fields in (
        ("layers", stats.sparsity, ("trial", "level", "layer", "kept", "total")),
        ("init", stats.init, ("level", "weights_remaining", "survivors", "pruned", "survivors_mean_abs",
                              "pruned_mean_abs", "survivors_above_std", "pruned_above_std")),
        ("overlap", stats.overlap, ("level", "weights_remaining", "trials_mean", "trials_min", "trials_max",
                                    "random", "previous_level", "nested")),
        ("movement", stats.movement, ("level", "branch", "weights_remaining", "units", "mean", "median", "p90")),
    ):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(fields)
        for r in rows:
            w.writerow(["" if getattr(r, f) is None else getattr(r, f) for f in fields])
        out[name] = buf.getvalue()
    return out


def statistics_figures(stats: TicketStatistics, out_dir: Path,
                       formats: Sequence[str] = FORMATS) -> dict[str, list[Path]]:
    """The four figures of the module docstring that the statistics allow; {stem: files}."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    written: dict[str, list[Path]] = {}
    if stats.sparsity:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        layers = list(dict.fromkeys(r.layer for r in stats.sparsity))
        for layer in layers:
            by_level: dict[int, list[float]] = {}
            for r in stats.sparsity:
                if r.layer == layer:
                    by_level.setdefault(r.level, []).append(r.fraction)
            lv = sorted(by_level)
            ax.plot(lv, [100 * sum(by_level[v]) / len(by_level[v]) for v in lv], marker="o", ms=3, label=layer)
        ax.set_yscale("log")
        ax.set_xlabel("pruning level")
        ax.set_ylabel("weights kept in the layer (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small")
        ax.set_title(f"{stats.run}: sparsity per layer", fontsize="medium")
        written["statistics_layers"] = save_figure(fig, out_dir / "statistics_layers", formats, DPI)
    pruned_levels = [r for r in stats.init if r.level > 0]
    if pruned_levels:
        picks = [pruned_levels[0], pruned_levels[len(pruned_levels) // 2], pruned_levels[-1]]
        picks = list({r.level: r for r in picks}.values())
        fig, axes = plt.subplots(1, len(picks), figsize=(3.8 * len(picks), 3.4), squeeze=False)
        centers = [(a + b) / 2 for a, b in zip(stats.edges[:-1], stats.edges[1:])]
        width = stats.edges[1] - stats.edges[0]
        for ax, r in zip(axes[0], picks):
            for counts, label, color in ((r.pruned_hist, "pruned", "tab:gray"),
                                         (r.survivors_hist, "survivors", "tab:blue")):
                total = sum(counts) or 1
                ax.bar(centers, [c / total / width for c in counts], width=width, alpha=0.55, color=color,
                       label=f"{label} ({sum(counts):,})")
            ax.set_title(f"level {r.level}: {_pct(r.weights_remaining)} kept", fontsize="medium")
            ax.set_xlabel("initial value / layer's initial std")
            ax.legend(fontsize="x-small")
        axes[0][0].set_ylabel("density")
        fig.suptitle(f"{stats.run}: initial values of survivors vs pruned weights", fontsize="medium")
        written["statistics_init"] = save_figure(fig, out_dir / "statistics_init", formats, DPI)
    overlap = [r for r in stats.overlap if r.trials_mean is not None]
    if overlap:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        x = [100 * r.weights_remaining for r in overlap]
        lo = [r.trials_mean - r.trials_min for r in overlap]
        hi = [r.trials_max - r.trials_mean for r in overlap]
        ax.errorbar(x, [r.trials_mean for r in overlap], yerr=[lo, hi],
                    marker="o", ms=4, capsize=2, label="between trials (mean, min/max)")
        ax.plot(x, [r.random for r in overlap], ls="--", color="gray", label="two random masks of these sizes")
        _x_axis(ax, x)
        ax.set_ylabel("Jaccard index of the kept weights")
        ax.legend(fontsize="small")
        ax.set_title(f"{stats.run}: mask overlap", fontsize="medium")
        written["statistics_overlap"] = save_figure(fig, out_dir / "statistics_overlap", formats, DPI)
    if stats.movement:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        dense = [r for r in stats.movement if r.branch == "dense"]
        xs: list[float] = []
        for branch in dict.fromkeys(r.branch for r in stats.movement if r.branch != "dense"):
            rs = dense + [r for r in stats.movement if r.branch == branch]
            x = [100 * r.weights_remaining for r in rs]
            color, marker = BRANCH_STYLE.get(branch, ("gray", "x"))
            ax.plot(x, [r.mean for r in rs], color=color, marker=marker, ms=4, label=f"{branch}: mean")
            ax.plot(x, [r.p90 for r in rs], color=color, ls=":", label=f"{branch}: 90th percentile")
            xs += x
        _x_axis(ax, xs or [100.0])
        ax.set_ylabel("abs(w_final - w_start) / initial std")
        ax.legend(fontsize="small")
        ax.set_title(f"{stats.run}: how far surviving weights moved", fontsize="medium")
        written["statistics_movement"] = save_figure(fig, out_dir / "statistics_movement", formats, DPI)
    return written
