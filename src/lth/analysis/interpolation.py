"""The line between two networks: interpolated weights, the error along the path, its barrier.

Pure tensor code: state dicts and data in, numbers out (Frankle, Dziugaite, Roy & Carbin, ICML
2020, Sec. 2). Errors are fractions in [0, 1] (1 - accuracy).

A network with BatchNorm needs one more step at each point of the path: the running statistics
of an interpolated network are those of neither endpoint (the average of two networks' batch
statistics is not the statistics of the averaged network), so :func:`path_errors` recomputes them
at every point, endpoints included, with :func:`recompute_batchnorm` before evaluating.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..training import autocast

__all__ = ["alphas", "error_barrier", "error_rate", "has_batchnorm", "interpolate", "path_errors",
           "recompute_batchnorm"]


def interpolate(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """The state dict ``(1 - alpha) * a + alpha * b``, computed with ``torch.lerp``, which is exact
    at both ends: alpha 0 gives ``a``'s values and alpha 1 ``b``'s, bit for bit. Integer entries
    (BatchNorm's ``num_batches_tracked``) are copied from ``a``; :func:`recompute_batchnorm` resets
    them where they matter.

    >>> a, b = {"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([4.0, 2.0])}
    >>> interpolate(a, b, 0.25)["w"].tolist()
    [1.0, 2.0]
    """
    if set(a) != set(b):
        raise ValueError(f"the two state dicts hold different entries: {sorted(set(a) ^ set(b))}")
    out = {}
    for name, x in a.items():
        y = b[name]
        if x.shape != y.shape:
            raise ValueError(f"{name}: shapes {tuple(x.shape)} and {tuple(y.shape)} differ")
        out[name] = torch.lerp(x, y.to(x.dtype), float(alpha)) if x.is_floating_point() else x.clone()
    return out


def error_barrier(errors: Sequence[float]) -> float:
    """The error barrier of a path (Frankle et al. 2020, Sec. 2, "instability"): the largest error
    along it minus the mean of its two endpoints' errors (the first and last entries). Never
    negative. In the units of ``errors``: fractions in [0, 1] give a fraction, percentages a
    percentage. The paper calls a pair stable when the barrier is within 2 percentage points.

    >>> round(error_barrier([0.02, 0.05, 0.30, 0.04]), 6)
    0.27
    >>> error_barrier([1.5, 1.0, 2.5])
    0.5
    """
    errors = [float(e) for e in errors]
    if len(errors) < 2:
        raise ValueError(f"a path needs at least its two endpoints, got {len(errors)} error(s)")
    if not all(math.isfinite(e) for e in errors):
        raise ValueError(f"errors must be finite numbers, got {errors}")
    return max(errors) - (errors[0] + errors[-1]) / 2


def alphas(points: int) -> list[float]:
    """``points`` evenly spaced interpolation weights from 0 to 1, both included.

    >>> alphas(5)
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if points < 2:
        raise ValueError(f"points = {points}: a path needs at least its two endpoints")
    return [float(a) for a in np.linspace(0.0, 1.0, points)]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether any layer of ``model`` keeps BatchNorm running statistics."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Sequence[torch.Tensor], precision: str = "fp32") -> None:
    """Replace every BatchNorm layer's running mean and variance by their cumulative average over
    ``batches``: statistics reset, ``momentum=None`` (PyTorch's cumulative moving average), one
    forward pass per batch without gradients. Only the BatchNorm layers are in train mode
    meanwhile, so dropout stays off. The model is left in eval mode with each layer's momentum
    restored. A model without BatchNorm is left as it is."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    if not batches:
        raise ValueError("recomputing BatchNorm statistics needs at least one batch of training data")
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for x in batches:
            with autocast(x.device, precision):
                model(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()


@torch.no_grad()
def error_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 10_000,
               precision: str = "fp32") -> float:
    """The fraction of ``x`` that ``model`` classifies wrongly (arg-max class), in eval mode
    (dropout off, BatchNorm's running statistics); ``precision`` as in training (bf16 products
    under autocast, or fp32)."""
    model.eval()
    wrong = 0
    for i in range(0, x.shape[0], batch_size):
        with autocast(x.device, precision):
            out = model(x[i: i + batch_size])
        wrong += int((out.float().argmax(1) != y[i: i + batch_size]).sum())
    return wrong / max(int(x.shape[0]), 1)


def path_errors(model: nn.Module, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                alpha_values: Sequence[float], data: Sequence[tuple[torch.Tensor, torch.Tensor]], *,
                bn_batches: Sequence[torch.Tensor] = (), batch_size: int = 10_000,
                precision: str = "fp32") -> list[list[float]]:
    """The error of ``interpolate(a, b, alpha)`` on each ``(x, y)`` of ``data`` at each alpha:
    ``out[s][i]`` is data set ``s`` at ``alpha_values[i]``. ``model`` (an instance of the
    architecture on the data's device) is overwritten. A model with BatchNorm needs
    ``bn_batches`` (training images), on which its statistics are recomputed at every point
    (:func:`recompute_batchnorm`)."""
    bn = has_batchnorm(model)
    if bn and not bn_batches:
        raise ValueError(f"{type(model).__name__} has BatchNorm: give bn_batches to recompute its statistics")
    out: list[list[float]] = [[] for _ in data]
    for alpha in alpha_values:
        model.load_state_dict(interpolate(a, b, alpha))
        if bn:
            recompute_batchnorm(model, bn_batches, precision)
        for s, (x, y) in enumerate(data):
            out[s].append(error_rate(model, x, y, batch_size, precision))
    return out
