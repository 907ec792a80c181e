"""``lth config``: print a configuration as a file to start from (TOML or YAML)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    c = subparsers.add_parser(
        "config", help="print a preset (or a configuration file, resolved) as TOML or YAML",
        description="Print a complete configuration file: edit it and pass it to `lth run --config FILE`.")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--preset", default=None, help="named configuration (default: digits-quick)")
    src.add_argument("--config", type=Path, metavar="FILE", help="a configuration file to resolve")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a value before printing (repeatable)")
    c.add_argument("--format", choices=("toml", "yaml"), default="toml")
    return c


def run(args: argparse.Namespace) -> int:
    from ..config import apply_overrides, dump_config, get_preset, load_config

    cfg = load_config(args.config) if args.config is not None else get_preset(args.preset or "digits-quick")
    print(dump_config(apply_overrides(cfg, args.overrides), args.format), end="")
    return 0
