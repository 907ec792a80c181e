"""Shared helpers of the benchmark scripts (run them from the repository root)."""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from pathlib import Path

import torch

from lth.store import atomic_write_bytes, atomic_write_json
from lth.training.engines import EnginePolicy


def machine_info(device: str = "cpu") -> str:
    """CPU model, cores, torch version and threads (and the GPU, for a CUDA device): recorded
    beside every measured number."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = ""
    if str(device).startswith("cuda"):
        gpu = f"{torch.cuda.get_device_name(torch.device(device))}, CUDA {torch.version.cuda}; "
    return (f"{gpu}{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
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


def engine_policy(**fields: float | int) -> EnginePolicy:
    """The default :class:`~lth.training.engines.EnginePolicy` with ``fields`` replaced (its
    lower-case field names), so a benchmark can force a kernel on or off for one arm and pass the
    policy to the engine it builds."""
    return dataclasses.replace(EnginePolicy(), **fields)
