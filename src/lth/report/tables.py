"""Unit records -> aggregated rows (mean, min, max over trials) -> text, markdown or JSON tables."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..experiment import branch_names
from ..store import RunStore, StoreError, UnitRecord


class ReportError(RuntimeError):
    """A report cannot be produced (missing run files, missing optional dependency)."""


def branch_rank(branch: str) -> int:
    """Branches in registry order (the ticket first, then its controls); unknown ones last."""
    names = branch_names()
    return names.index(branch) if branch in names else len(names)


@dataclass(frozen=True)
class Stat:
    mean: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, xs: list[float]) -> Stat:
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
    final_iteration: int | None = None  # the last evaluation's iteration (the latest over trials)


class DamagedUnitsWarning(UserWarning):
    """Some finished units of a run directory are damaged and were left out of a report."""


def load_records(run_dir: Path) -> list[UnitRecord]:
    """Every intact finished unit of a run directory, read from the units' own records (never
    from summary.json). Damaged units are left out, with a :class:`DamagedUnitsWarning` naming them."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ReportError(f"{run_dir} is not an lth run directory (no config.json)")
    store = RunStore(run_dir)
    try:
        records, damaged = store.survey()
    except StoreError as e:
        raise ReportError(str(e)) from e
    if damaged:
        first = next(iter(damaged))
        warnings.warn(DamagedUnitsWarning(
            f"{len(damaged)} finished unit(s) of {run_dir} are damaged and left out (e.g. trial {first[0]} level "
            f"{first[1]} {first[2]}: {damaged[first][0]}); `lth verify {run_dir}` lists them, rerunning the "
            "same `lth run` command redoes them"), stacklevel=2)
    if not records:
        raise ReportError(f"{run_dir} has no finished unit yet")
    return records


def aggregate(records: Iterable[UnitRecord | dict[str, Any]]) -> list[Row]:
    """One row per (level, branch): means and min/max over the trials that finished ``ok``."""
    groups: dict[tuple[int, str], list[UnitRecord]] = {}
    for r in records:
        rec = UnitRecord.from_dict(r) if isinstance(r, dict) else r
        groups.setdefault((rec.level, rec.branch), []).append(rec)
    rows = []
    for (level, branch), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], branch_rank(kv[0][1]), kv[0][1])):
        ok = [r for r in rs if r.ok]
        if not ok:
            continue
        rows.append(Row(
            level=level,
            branch="dense" if level == 0 else branch,
            weights_remaining=sum(r.weights_remaining for r in ok) / len(ok),
            early_stop_iteration=Stat.of([float(r.early_stop_iteration) for r in ok]),
            early_stop_test_accuracy=Stat.of([100 * r.early_stop_test_accuracy for r in ok]),
            final_test_accuracy=Stat.of([100 * r.final_test_accuracy for r in ok]),
            trials=len(ok),
            failed=len(rs) - len(ok),
            final_iteration=max((r.final_iteration for r in ok if r.final_iteration is not None), default=None),
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
