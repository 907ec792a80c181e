"""``lth report``: the results table of a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    rep = subparsers.add_parser("report", help="print the results table of a run directory")
    rep.add_argument("run_dir", type=Path)
    rep.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    return rep


def run(args: argparse.Namespace) -> int:
    from ..report import report
    from .common import lth_warnings

    with lth_warnings():
        print(report(args.run_dir, args.format), end="")
    return 0
