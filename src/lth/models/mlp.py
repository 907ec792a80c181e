"""Fully connected networks: LeNet-300-100 (paper Fig. 2) and a small MLP for the 8x8 digits demo."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from .registry import register


class MLP(nn.Module):
    """Fully connected ReLU network on flattened inputs (LeNet-300-100 is hidden=(300, 100)).

    >>> MLP(784, (300, 100), 10).out.weight.shape
    torch.Size([10, 100])
    """

    init_scheme = "glorot_normal"

    def __init__(self, in_features: int, hidden: Iterable[int], num_classes: int):
        super().__init__()
        sizes = [in_features, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], num_classes)
        self.output_weight = "out.weight"

    def linear_relu_chain(self) -> list[str]:
        """The Linear layers in order: this model is ``flatten -> (Linear -> ReLU)* -> Linear``,
        which the vectorised MLP engine trains with a hand-written backward pass."""
        return [f"hidden.{i}" for i in range(len(self.hidden))] + ["out"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.out(x)


@register("lenet300")
def lenet300(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """LeNet-300-100 (paper Fig. 2): 266,200 prunable weights on 28x28 inputs."""
    return MLP(math.prod(input_shape), (300, 100), num_classes)


@register("mlp-100-50")
def mlp_100_50(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A small fully connected network for the 8x8 digits demo."""
    return MLP(math.prod(input_shape), (100, 50), num_classes)
