"""Checking that a configured device exists on this machine, before any work starts; and the
machine and software a unit trained on, as its record states them."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

from ..config import ConfigError


def check_device(name: str) -> torch.device:
    """``torch.device(name)`` if this machine can run on it; a :class:`ConfigError` saying what
    is missing and what to use instead if not (the name's form is checked by the config)."""
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(f"runtime.device = {name!r}: not a device torch knows ({e}); use cpu or cuda") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"runtime.device = {name!r}: CUDA is not available on this machine (torch "
                              f"{torch.__version__}); use --device cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"runtime.device = {name!r}: this machine has {n} CUDA device(s), cuda:0 to "
                              f"cuda:{n - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"runtime.device = {name!r}: Apple's MPS is not available on this machine; use --device cpu")
    return dev


def _cpu_model() -> str:
    """The processor's model name (Linux: /proc/cpuinfo; elsewhere what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Model name", "Processor"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown processor"


def describe_machine(device: str | torch.device = "cpu") -> str:
    """What a unit trained on, for its record and the report: the processor model and the number
    of logical CPUs, and the GPU model when ``device`` is a CUDA device. The torch thread count is
    a runtime choice recorded with the configuration, not here."""
    dev = torch.device(device)
    cpu = f"{_cpu_model()}, {os.cpu_count() or '?'} logical CPUs"
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(dev)} ({dev}); host {cpu}"
    if dev.type != "cpu":
        return f"{dev}; host {cpu}"
    return cpu


def software_versions() -> str:
    """The versions a result depends on: lth, torch (with its build, e.g. +cpu) and Python. lth
    run from a source tree without installing it (PYTHONPATH=src) names its own version so."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        lth = version("lth")
    except PackageNotFoundError:
        from .. import __version__

        lth = f"{__version__} (not installed)"
    py = ".".join(str(v) for v in sys.version_info[:3])
    return f"lth {lth}, torch {torch.__version__}, Python {py}, {platform.system() or 'unknown OS'}"
