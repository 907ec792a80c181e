"""Instability results -> tables (text, markdown, CSV, JSON) and the barrier-vs-k figure.

Percentages throughout: barriers in percentage points of error, accuracies in percent.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from ..analysis import InstabilityResult
from ..analysis.instability_store import load_results
from ..store import DamagedFileError, StoreError, atomic_write_bytes

HEADER = ("trial", "level", "weights %", "k", "train barrier %", "test barrier %", "endpoint test acc %")
CSV_FIELDS = ("trial", "level", "weights_remaining_pct", "k", "train_barrier_pct", "test_barrier_pct",
              "endpoint_test_acc_0_pct", "endpoint_test_acc_1_pct", "iterations", "points", "train_examples",
              "bn_recomputed", "train_seconds", "eval_seconds")
#: The paper's threshold: a network is stable when its barrier is within this many points.
STABLE_BELOW_PCT = 2.0


def _sorted(results: Sequence[InstabilityResult]) -> list[InstabilityResult]:
    return sorted(results, key=lambda r: (r.trial, r.level, r.rewind_iteration))


def table_rows(results: Sequence[InstabilityResult]) -> list[tuple[str, ...]]:
    """One row per result: the endpoint accuracy is the two copies' mean (both are in the CSV)."""
    return [(str(r.trial), str(r.level), f"{100 * r.weights_remaining:.2f}", str(r.rewind_iteration),
             f"{100 * r.train_barrier:.2f}", f"{100 * r.test_barrier:.2f}",
             f"{100 * sum(r.endpoint_test_accuracy) / len(r.endpoint_test_accuracy):.2f}")
            for r in _sorted(results)]


def text_table(results: Sequence[InstabilityResult]) -> str:
    body = table_rows(results)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(HEADER)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))
    return "\n".join([line(HEADER), line(tuple("-" * w for w in widths))] + [line(r) for r in body]) + "\n"


def markdown_table(results: Sequence[InstabilityResult]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---:" for _ in HEADER) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in table_rows(results)]) + "\n"


def csv_table(results: Sequence[InstabilityResult]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in _sorted(results):
        w.writerow([r.trial, r.level, f"{100 * r.weights_remaining:.4f}", r.rewind_iteration,
                    f"{100 * r.train_barrier:.4f}", f"{100 * r.test_barrier:.4f}",
                    *(f"{100 * a:.4f}" for a in r.endpoint_test_accuracy), r.iterations, r.protocol.points,
                    r.train_examples, r.bn_recomputed, r.train_seconds, r.eval_seconds])
    return buf.getvalue()


def markdown_report(results: Sequence[InstabilityResult], title: str) -> str:
    """The markdown file: the table and how to read it."""
    rs = _sorted(results)
    protocol = rs[0].protocol if rs else None
    notes = [f"# Instability: {title}", "",
             "Two copies trained from theta_k (masked) with different data orders; the error along the line "
             "between them (Frankle et al., ICML 2020). Barrier = largest error on the path minus the mean of "
             f"the endpoints' errors, in percentage points; the paper calls a network stable below "
             f"{STABLE_BELOW_PCT:g} points. The endpoint test accuracy is the two copies' mean (both are in "
             "instability.csv).", ""]
    if protocol is not None:
        notes += [f"Path: {protocol.points} evenly spaced points; train error on {rs[0].train_examples:,} training "
                  f"images; {rs[0].iterations:,} iterations per copy.", ""]
    return "\n".join(notes) + "\n" + markdown_table(rs)


def stable_from(results: Sequence[InstabilityResult]) -> dict[int, int | None]:
    """Per level, the smallest rewind point k from which every measured k' >= k is stable (test
    barrier, the mean over trials, below :data:`STABLE_BELOW_PCT` points); None where the largest
    k measured is not."""
    out: dict[int, int | None] = {}
    for level in sorted({r.level for r in results}):
        by_k: dict[int, list[float]] = {}
        for r in results:
            if r.level == level:
                by_k.setdefault(r.rewind_iteration, []).append(100 * r.test_barrier)
        first = None
        for k in sorted(by_k, reverse=True):
            if sum(by_k[k]) / len(by_k[k]) >= STABLE_BELOW_PCT:
                break
            first = k
        out[level] = first
    return out


def stability_lines(results: Sequence[InstabilityResult]) -> list[str]:
    """One sentence per level saying from which k the network is stable (:func:`stable_from`)."""
    lines = []
    for level, k in stable_from(results).items():
        rs = [r for r in results if r.level == level]
        ks = sorted({r.rewind_iteration for r in rs})
        what = "the dense network" if level == 0 else f"level {level} ({100 * rs[0].weights_remaining:.3g}% of weights)"
        measured = f"k = {', '.join(map(str, ks))} measured"
        if k is None:
            lines.append(f"{what}: unstable at k = {ks[-1]} (test barrier at least {STABLE_BELOW_PCT:g} points); "
                         f"{measured}")
        elif k == ks[0]:
            lines.append(f"{what}: stable at every k measured (k = {', '.join(map(str, ks))})")
        else:
            lines.append(f"{what}: stable from k = {k} on, not below it ({measured})")
    return lines


def run_instability(run_dir: Path) -> tuple[list[InstabilityResult], list[DamagedFileError]]:
    """A run directory's ``lth instability`` results (``RUN_DIR/instability``) and the damaged ones
    left out; nothing where it has none."""
    damaged: list[DamagedFileError] = []
    folder = Path(run_dir) / "instability"
    if not folder.is_dir():
        return [], []
    try:
        return load_results(folder, damaged), damaged
    except StoreError:
        return [], []


def write_tables(results: Sequence[InstabilityResult], out: Path, title: str) -> list[Path]:
    """``instability.md``, ``.csv`` and ``.json`` (every result in full, errors along the path
    included) in ``out``, each written atomically."""
    out = Path(out)
    rs = _sorted(results)
    files = {"instability.md": markdown_report(rs, title), "instability.csv": csv_table(rs),
             "instability.json": json.dumps([r.to_dict() for r in rs], indent=2) + "\n"}
    for name, text in files.items():
        atomic_write_bytes(out / name, text.encode())
    return [out / name for name in files]
