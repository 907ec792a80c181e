"""``lth verify``: check a run directory against the checksums recorded when it was written."""

from __future__ import annotations

import argparse
from pathlib import Path

EXIT_INTACT, EXIT_DAMAGED = 0, 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "verify", help="check a run directory for damage and say what a rerun will redo",
        description="Check every file of a run directory against the size and SHA-256 recorded when it "
        "was written, and every finished unit's numbers against its metrics. Prints what is intact, "
        "what is damaged, and what rerunning the same `lth run` command will redo. Read-only. "
        f"Exit status: {EXIT_INTACT} = intact (finished or not), {EXIT_DAMAGED} = damage found.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory made by `lth run`")
    p.add_argument("--format", choices=("text", "json"), default="text")
    return p


def run(args: argparse.Namespace) -> int:
    from ..experiment import audit_run
    from ..experiment.audit import audit_json

    audit = audit_run(args.run_dir)
    print(audit_json(audit) if args.format == "json" else audit.text(), end="")
    return EXIT_DAMAGED if audit.damaged else EXIT_INTACT
