"""The ``lth`` command line: thin; one module per command, each parses its arguments and calls
the same library functions the Python API exposes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import config, export, plot, presets, report, run, verify

COMMANDS = {"run": run, "presets": presets, "config": config, "report": report, "plot": plot,
            "export": export, "verify": verify}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lth",
        description="Find, test and study lottery tickets (Frankle & Carbin, ICLR 2019).",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from ..config import ConfigError, PresetError
    from ..data import DataError
    from ..models import ModelError
    from ..report import ReportError
    from ..store import StoreError

    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command].run(args)
    except (ConfigError, DataError, ModelError, PresetError, StoreError, ReportError) as e:
        print(f"lth: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("\nlth: interrupted; rerun the same command to continue from the last checkpoint",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
