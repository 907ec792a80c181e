"""The paper's figures from a run directory (matplotlib, an optional dependency)."""

from __future__ import annotations

from pathlib import Path

from .tables import ReportError, aggregate, branch_rank, load_records

BRANCH_STYLE = {"ticket": ("tab:blue", "o"), "reinit": ("tab:orange", "s"),
                "random_mask": ("tab:green", "^")}


def plot(run_dir: Path, out: Path, title: str | None = None) -> Path:
    """The paper's Fig. 3/4 view: early-stop iteration and test accuracy at early stop against
    the percent of weights remaining (log scale, dense on the left), mean with min/max bars."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # optional dependency
        raise ReportError("plotting needs matplotlib: pip install 'lth[plot]'") from e
    rows = aggregate(load_records(run_dir))
    dense = [r for r in rows if r.level == 0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for branch in sorted({r.branch for r in rows if r.level > 0}, key=branch_rank):
        rs = dense + [r for r in rows if r.branch == branch]
        x = [100 * r.weights_remaining for r in rs]
        color, marker = BRANCH_STYLE.get(branch, ("gray", "x"))
        for ax, key in zip(axes, ("early_stop_iteration", "early_stop_test_accuracy")):
            stats = [getattr(r, key) for r in rs]
            y = [s.mean for s in stats]
            err = [[s.mean - s.lo for s in stats], [s.hi - s.mean for s in stats]]
            ax.errorbar(x, y, yerr=err, color=color, marker=marker, ms=4, capsize=2, label=branch)
    xs = sorted({100 * r.weights_remaining for r in rows}, reverse=True)
    ticks = xs[:: max(1, len(xs) // 8)]
    for ax, label in zip(axes, ("early-stop iteration (min. validation loss)", "test accuracy at early stop (%)")):
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("percent of weights remaining")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title or Path(run_dir).name)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
