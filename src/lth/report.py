"""Read-only reporting over a run directory: tidy rows -> aggregated table (mean, min, max)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .store import read_json

class ReportError(RuntimeError):
    """A report cannot be produced (missing run files, missing optional dependency)."""


BRANCH_ORDER = {"ticket": 0, "reinit": 1, "random_mask": 2}


@dataclass(frozen=True)
class Stat:
    mean: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, xs: list[float]) -> "Stat":
        return cls(sum(xs) / len(xs), min(xs), max(xs), len(xs))


@dataclass(frozen=True)
class Row:
    level: int
    branch: str
    weights_remaining: float
    early_stop_iteration: Stat
    early_stop_test_accuracy: Stat
    final_test_accuracy: Stat
    trials: int
    failed: int


def load_records(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        raise ReportError(f"{path} not found: is {run_dir} an lth run directory with at least "
                                "one finished unit?")
    return read_json(path)


def aggregate(records: Iterable[dict[str, Any]]) -> list[Row]:
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["level"], r["branch"]), []).append(r)
    rows = []
    for (level, branch), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], BRANCH_ORDER.get(kv[0][1], 9), kv[0][1])):
        ok = [r for r in rs if r.get("status", "ok") == "ok"]
        if not ok:
            continue
        rows.append(Row(
            level=level,
            branch="dense" if level == 0 else branch,
            weights_remaining=sum(r["weights_remaining"] for r in ok) / len(ok),
            early_stop_iteration=Stat.of([float(r["early_stop_iteration"]) for r in ok]),
            early_stop_test_accuracy=Stat.of([100 * r["early_stop_test_accuracy"] for r in ok]),
            final_test_accuracy=Stat.of([100 * r["final_test_accuracy"] for r in ok]),
            trials=len(ok),
            failed=len(rs) - len(ok),
        ))
    return rows


def _fmt(s: Stat, digits: int) -> str:
    if s.n == 1:
        return f"{s.mean:.{digits}f}"
    return f"{s.mean:.{digits}f} [{s.lo:.{digits}f}, {s.hi:.{digits}f}]"


HEADER = ("level", "weights %", "branch", "early-stop it.", "test acc @ early stop %",
          "final test acc %", "trials")


def table_rows(rows: list[Row]) -> list[tuple[str, ...]]:
    out = []
    for r in rows:
        trials = f"{r.trials}" + (f" (+{r.failed} failed)" if r.failed else "")
        out.append((str(r.level), f"{100 * r.weights_remaining:.2f}", r.branch,
                    _fmt(r.early_stop_iteration, 0), _fmt(r.early_stop_test_accuracy, 2),
                    _fmt(r.final_test_accuracy, 2), trials))
    return out


def markdown_table(rows: list[Row]) -> str:
    body = table_rows(rows)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def text_table(rows: list[Row]) -> str:
    body = table_rows(rows)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(HEADER)]
    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i != 2 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(HEADER), line(tuple("-" * w for w in widths))] + [line(r) for r in body]) + "\n"


def report(run_dir: Path, fmt: str = "text") -> str:
    rows = aggregate(load_records(run_dir))
    if fmt == "markdown":
        return markdown_table(rows)
    if fmt == "json":
        return json.dumps([r.__dict__ for r in rows], default=lambda o: o.__dict__, indent=2)
    return text_table(rows)


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
    for branch in sorted({r.branch for r in rows if r.level > 0}, key=lambda b: BRANCH_ORDER.get(b, 9)):
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
