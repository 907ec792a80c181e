"""``lth export``: one unit's ticket as a small safetensors file."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..tickets import add_export_parser

    return add_export_parser(subparsers)


def run(args: argparse.Namespace) -> int:
    from ..tickets import cmd_export

    return cmd_export(args)
