"""VGG-19 for CIFAR-10 (paper Sec. 4, App. I)."""

from __future__ import annotations

import torch
from torch import nn

from .registry import ModelError, register


class VGG(nn.Module):
    """VGG-19 for CIFAR (as in the paper, App. I): 16 conv layers with BatchNorm, avg-pool, fc 10.

    >>> sum(isinstance(m, nn.Conv2d) for m in VGG((3, 32, 32), 10).modules())
    16
    """

    init_scheme = "kaiming_normal"
    PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
            512, 512, 512, 512)

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        if len(input_shape) != 3:
            raise ModelError(f"VGG needs (channels, height, width) inputs, got {input_shape}")
        layers: list[nn.Module] = []
        c = input_shape[0]
        for v in self.PLAN:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU()]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(c, num_classes)
        self.output_weight = "out.weight"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.out(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register("vgg19")
def vgg19(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return VGG(input_shape, num_classes)
