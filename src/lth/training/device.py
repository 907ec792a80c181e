"""Checking that a configured device exists on this machine, before any work starts."""

from __future__ import annotations

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
