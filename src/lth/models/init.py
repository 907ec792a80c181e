"""Seeded initialisation of every parameter, from the distribution the model declares."""

from __future__ import annotations

import math

import torch
from torch import nn

from .introspection import DEFAULT_PRUNABLE_TYPES
from .registry import ModelError

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


def initialize(model: nn.Module, generator: torch.Generator) -> None:
    """Seeded initialisation of every parameter, from the distribution the model declares.

    ``glorot_normal`` (LeNet, Conv-N: "Gaussian Glorot", paper App. B) or ``kaiming_normal``
    (ResNet/VGG, as in the follow-up papers' code) for Linear/Conv weights; biases 0;
    normalisation layers weight 1, bias 0. Drawn on the CPU from ``generator`` so that the same seed
    gives the same theta0 on every device. Modules are visited in ``model.modules()`` order, one
    draw per weight, so the draws depend only on the architecture and the seed.

    >>> from lth.models import build_model
    >>> a, b = build_model("lenet300", (1, 28, 28), 10), build_model("lenet300", (1, 28, 28), 10)
    >>> initialize(a, torch.Generator().manual_seed(0)); initialize(b, torch.Generator().manual_seed(0))
    >>> torch.equal(a.out.weight, b.out.weight)
    True
    """
    scheme = getattr(model, "init_scheme", "glorot_normal")
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, DEFAULT_PRUNABLE_TYPES):
                w = mod.weight
                fan_in = w.shape[1] * math.prod(w.shape[2:])
                fan_out = w.shape[0] * math.prod(w.shape[2:])
                if scheme == "glorot_normal":
                    std = math.sqrt(2.0 / (fan_in + fan_out))
                elif scheme == "kaiming_normal":
                    std = math.sqrt(2.0 / fan_in)
                else:
                    raise ModelError(f"unknown init scheme {scheme!r}")
                w.copy_(torch.randn(w.shape, generator=generator) * std)
                if mod.bias is not None:
                    mod.bias.zero_()
            elif isinstance(mod, _NORM_TYPES):
                if getattr(mod, "weight", None) is not None:
                    mod.weight.fill_(1.0)
                if getattr(mod, "bias", None) is not None:
                    mod.bias.zero_()
