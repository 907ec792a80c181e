"""``lth plot``: the paper's figure (early stop and accuracy vs weights remaining)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    pl = subparsers.add_parser("plot", help="plot early-stop iteration and accuracy vs weights remaining")
    pl.add_argument("run_dir", type=Path)
    pl.add_argument("--out", type=Path, help="image file; its suffix picks the format: .png, .pdf, .svg or "
                    "another that matplotlib writes (default: RUN_DIR/figure.png)")
    pl.add_argument("--title")
    return pl


def run(args: argparse.Namespace) -> int:
    from ..report import plot
    from ..report.figures import printable
    from .common import lth_warnings

    with lth_warnings():
        print(printable(plot(args.run_dir, args.out or args.run_dir / "figure.png", args.title)))
    return 0
