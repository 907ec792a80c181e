"""``lth presets``: one line per named configuration."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    return subparsers.add_parser("presets", help="list the named configurations")


def run(args: argparse.Namespace) -> int:
    from ..config import describe_presets

    items = describe_presets()
    w = max(len(n) for n, _ in items)
    for name, desc in items:
        print(f"{name.ljust(w)}  {desc}")
    return 0
