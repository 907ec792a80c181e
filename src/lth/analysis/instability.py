"""Instability along the line between two trained networks (linear mode connectivity; Frankle,
Dziugaite, Roy & Carbin, ICML 2020).

Two copies of a network start from the same weights (those at iteration k, masked for a sparse
network) and train with different data orders. Their **error barrier** is the largest error on the
straight line between their final weights, ``(1 - a) * w1 + a * w2`` at ``points`` evenly spaced
``a`` in [0, 1] (default 30, both ends included), minus the mean of the two endpoint errors:
0 when the line is no worse than its ends. The paper calls a network stable when it is below
about 2% (``../shared/PAPER.md``).

This module is the measurement, on any ``nn.Module`` and weights: :func:`interpolate`,
:func:`error_barrier`, :func:`path_errors`. Networks with batch normalisation get their running
statistics recomputed at every point of the path before it is evaluated (:func:`recompute_batchnorm`):
the statistics of the endpoints are not those of the interpolated weights, and evaluating with
them measures a mismatch, not the loss landscape. Dropout is off (evaluation mode) throughout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

Tensors = dict[str, torch.Tensor]


def interpolate(a: Tensors, b: Tensors, alpha: float) -> Tensors:
    """``(1 - alpha) * a + alpha * b`` for every floating-point tensor; other entries (e.g. batch
    norm's ``num_batches_tracked``) are ``a``'s. ``alpha`` 0 and 1 give ``a`` and ``b`` exactly."""
    if a.keys() != b.keys():
        raise ValueError(f"the two state dicts hold different names: {sorted(a.keys() ^ b.keys())}")
    out = {}
    for k, va in a.items():
        vb = b[k]
        if va.shape != vb.shape:
            raise ValueError(f"{k}: shapes {tuple(va.shape)} and {tuple(vb.shape)} differ")
        if not va.is_floating_point() or alpha == 0:
            out[k] = va.clone()
        elif alpha == 1:
            out[k] = vb.clone()
        else:
            out[k] = torch.lerp(va, vb.to(va.dtype), alpha)
    return out


def error_barrier(errors: Sequence[float]) -> float:
    """The largest error along the path minus the mean of its two endpoint errors (same units as
    ``errors``: fractions or percent). 0 for a path that is nowhere worse than its ends' mean.

    >>> round(error_barrier([0.02, 0.10, 0.04]), 6)
    0.07
    """
    if len(errors) < 2:
        raise ValueError("a path needs at least its two endpoints")
    return max(errors) - (errors[0] + errors[-1]) / 2


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> None:
    """Replace every batch-norm layer's running mean and variance by their values on ``x``
    (training data): the average over batches of ``batch_size`` of each batch's mean and unbiased
    variance (PyTorch's cumulative average, momentum None), computed in training mode without
    gradients; the model is left in evaluation mode with its momentum restored."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
    finally:
        for m, mom in zip(layers, saved):
            m.momentum = mom
        model.eval()


@torch.no_grad()
def error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """The fraction of ``x`` that ``model`` (in evaluation mode) misclassifies; ties in the
    logits go to the first class (``argmax``)."""
    model.eval()
    wrong = 0
    for i in range(0, len(x), batch_size):
        wrong += int((model(x[i:i + batch_size]).argmax(1) != y[i:i + batch_size]).sum())
    return wrong / len(x)


@dataclass(frozen=True)
class PathErrors:
    """Errors (fractions) at evenly spaced points of the line between two networks."""

    alphas: tuple[float, ...]
    errors: tuple[float, ...]

    @property
    def barrier(self) -> float:
        return error_barrier(self.errors)


def path_errors(model: nn.Module, a: Tensors, b: Tensors, x: torch.Tensor, y: torch.Tensor, *,
                points: int = 30, bn_data: torch.Tensor | None = None, batch_size: int = 1000) -> PathErrors:
    """The error of ``model`` loaded with each of ``points`` evenly spaced interpolations of ``a``
    and ``b`` (module docstring) on ``(x, y)``. Batch-norm statistics are recomputed at each
    point on ``bn_data`` (required for a model with batch norm: training data)."""
    if points < 2:
        raise ValueError(f"points = {points}: the path needs at least its two endpoints")
    bn = has_batchnorm(model)
    if bn and bn_data is None:
        raise ValueError("the model has batch normalisation: pass bn_data (training inputs) to recompute its "
                         "statistics at each point of the path")
    alphas = tuple(i / (points - 1) for i in range(points))
    errors = []
    for alpha in alphas:
        model.load_state_dict(interpolate(a, b, alpha))
        if bn:
            recompute_batchnorm(model, bn_data, batch_size)
        errors.append(error(model, x, y, batch_size))
    return PathErrors(alphas, tuple(errors))
