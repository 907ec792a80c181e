"""Numeric modes of a training run: bf16 matrix products and flushing denormals on the CPU."""

from __future__ import annotations

from contextlib import contextmanager

import torch


def autocast(device: torch.device, precision: str):
    """bfloat16 matrix products (float32 weights and loss) for ``precision == "bf16"``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextmanager
def denormals_flushed(enabled: bool):
    """Flush denormal floats to zero on the CPU while training (``torch.set_flush_denormal``).

    A trained classifier is confident: many of its softmax probabilities fall below 1.2e-38, and
    every product that reads the loss gradient then takes the CPU's slow denormal path. Flushing
    changes only values below 1.2e-38, which mostly vanish when added to anything of normal size;
    where one does not (a last bit of a weight), the difference can grow over thousands of
    iterations, so results equal those without flushing statistically, not always bitwise.
    PyTorch has no getter for the mode, so it is switched off again on exit."""
    if not enabled or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
