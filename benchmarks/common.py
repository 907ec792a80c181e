"""Shared helpers of the benchmark scripts (run them from the repository root)."""

from __future__ import annotations

import os
import platform
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from lth.store import atomic_write_bytes, atomic_write_json


def machine_info() -> str:
    """CPU model, cores, torch version and threads: recorded beside every measured number."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}")


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that produced a results file, as it is typed from the repository root."""
    return f"python benchmarks/{script} " + " ".join(sys.argv[1:] if argv is None else argv)


def write_results(results_dir: str | Path, name: str, data: dict, md: str) -> None:
    """``NAME.json`` and ``NAME.md`` in ``results_dir`` (atomically), and the markdown on stdout."""
    out = Path(results_dir)
    atomic_write_json(out / f"{name}.json", data)
    atomic_write_bytes(out / f"{name}.md", md.encode())
    print(md)


@contextmanager
def stacked_thresholds(**values: float) -> Iterator[None]:
    """Override module-level thresholds of :mod:`lth.stacked` (read when an engine is built) and
    restore them afterwards, so a benchmark can force a kernel on or off for one arm."""
    import lth.stacked as st

    saved = {k: getattr(st, k) for k in values}
    try:
        for k, v in values.items():
            setattr(st, k, v)
        yield
    finally:
        for k, v in saved.items():
            setattr(st, k, v)
