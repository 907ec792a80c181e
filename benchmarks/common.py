"""Shared helpers of the benchmark scripts (run them from the repository root)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


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
