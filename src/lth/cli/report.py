"""``lth report``: the results table and verdict of one or more run directories, and the report
files (figures, tables, report.html)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of levels, e.g. 0,4,8") from None
    if not levels or any(lv < 0 for lv in levels):
        raise argparse.ArgumentTypeError(f"{text!r}: give levels >= 0, e.g. 0,4,8")
    return levels


def _tolerance(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of percentage points >= 0, e.g. 0.5")
    return v


def add_parser(subparsers) -> argparse.ArgumentParser:
    rep = subparsers.add_parser(
        "report", help="results table, verdict, the paper's figures and report.html of run directories",
        description="Print the results table and the verdict (did IMP find winning tickets, down to what "
        "size?) of each run directory, and write the report: figures as PNG and SVG (test accuracy at early "
        "stop and at the end, early-stop iteration, training curves), tables as markdown and CSV, the verdict, "
        "and a self-contained report.html. Several run directories share the figures' axes.")
    rep.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    rep.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                     help="how the table is printed (json: the rows alone, without the verdict and the report's path)")
    rep.add_argument("--out", type=Path, metavar="DIR",
                     help="folder for the report files (default: RUN_DIR/report; required with several run "
                     "directories)")
    rep.add_argument("--tolerance", type=_tolerance, default=0.0, metavar="POINTS",
                     help="percentage points of test accuracy below the dense network's minimum over trials "
                     "that still count as matching it (default 0)")
    rep.add_argument("--curve-levels", type=_levels, metavar="L,L,...",
                     help="levels whose training curves are drawn (default: up to 5 spread from dense to the "
                     "sparsest)")
    rep.add_argument("--no-files", action="store_true", help="print only; write no report files")
    rep.add_argument("--no-statistics", action="store_true",
                     help="leave out the ticket statistics (they read every mask and trained weight)")
    rep.add_argument("--no-figures", action="store_true",
                     help="write tables, verdict and report.html without figures (no matplotlib needed)")
    return rep


def run(args: argparse.Namespace) -> int:
    from ..report import ReportError, load_run, markdown_table, text_table, verdict, write_report
    from ..report.figures import printable
    from ..report.instability import STABLE_BELOW_PCT, run_instability, stability_lines
    from .common import lth_warnings

    if len(args.run_dirs) > 1 and args.out is None and not args.no_files:
        raise ReportError(f"{len(args.run_dirs)} run directories: give --out DIR for their combined report "
                          "(or --no-files to print only)")
    with lth_warnings():
        runs = [load_run(d) for d in args.run_dirs]
    if args.format == "json":
        rows = {run.name: [r.__dict__ for r in run.rows] for run in runs}
        data = next(iter(rows.values())) if len(runs) == 1 else rows
        print(json.dumps(data, default=lambda o: o.__dict__, indent=2))
    for run in runs:
        if args.format == "json":
            break
        if len(runs) > 1:
            print(f"{'## ' if args.format == 'markdown' else ''}{printable(run.name)}\n")
        print((markdown_table if args.format == "markdown" else text_table)(run.rows), end="")
        if any(r.level == 0 for r in run.rows):
            print()
            print(verdict(run.rows, printable(run.name), args.tolerance, run.planned_levels).text(), end="")
        stability = stability_lines(run_instability(run.path)[0])
        if stability:
            print(f"\ninstability (lth instability, test barrier below {STABLE_BELOW_PCT:g} points is stable):")
            print("".join(f"  {printable(line)}\n" for line in stability), end="")
        if len(runs) > 1:
            print()
    if args.no_files:
        return 0
    out = args.out or args.run_dirs[0] / "report"
    files = write_report(runs, out, tolerance=args.tolerance, curve_levels=args.curve_levels,
                         figures=not args.no_figures, statistics=not args.no_statistics)
    if args.format != "json":  # stdout stays one JSON document
        print(f"report: {printable(files.html)}")
    return 0
