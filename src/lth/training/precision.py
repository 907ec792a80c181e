"""Numeric modes of a training run: bf16 matrix products, full fp32 on a GPU, and flushing denormals
on the CPU."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def autocast(device: torch.device, precision: str):
    """A forward pass in ``precision``: bfloat16 matrix products (float32 weights and loss) for
    ``"bf16"``; IEEE fp32 for ``"fp32"``, also on a GPU (:func:`ieee_fp32_on_gpu`), so evaluations
    outside a training run (the instability analysis's path) compute like training."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"), \
            ieee_fp32_on_gpu(device, precision):
        yield


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


@contextmanager
def ieee_fp32_on_gpu(device: torch.device, precision: str):
    """fp32 means fp32 on a GPU too. PyTorch runs cuDNN convolutions in TF32 by default on
    Ampere and later GPUs: products keep 10 of fp32's 23 mantissa bits, so a run labelled fp32
    would not compute the paper's arithmetic, nor what the CPU computes. While training or
    evaluating in ``fp32`` on CUDA, convolutions and matrix products use IEEE fp32 (on an H100
    this made vmapped Conv-2 units about 3x slower: docs/PERFORMANCE.md, "GPU"); the previous
    settings are restored on exit (they are process-wide in PyTorch)."""
    if torch.device(device).type != "cuda" or precision != "fp32":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        switches = [(conv, "fp32_precision", "ieee"), (torch.backends.cuda.matmul, "fp32_precision", "ieee")]
    else:
        switches = [(torch.backends.cudnn, "allow_tf32", False), (torch.backends.cuda.matmul, "allow_tf32", False)]
    saved = [getattr(owner, name) for owner, name, _ in switches]
    for owner, name, value in switches:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for (owner, name, _), value in zip(switches, saved):
            setattr(owner, name, value)
