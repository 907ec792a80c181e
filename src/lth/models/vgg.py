"""VGG for CIFAR-10 with batch norm: VGG-19 (Frankle & Carbin 2019, Sec. 4 and App. I) and VGG-16
(Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis", Table 1).

One class; a depth is a plan. Every plan is 3x3 convolutions (padding 1) each followed by
BatchNorm and ReLU, a 2x2 max-pool at each ``"M"``, then global average pooling and one linear
output layer (the paper's table: "avg-pool, 10").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .registry import ModelError, register

# Convolution widths per depth; "M" = 2x2 max-pool. The CIFAR VGGs drop ImageNet VGG's last pool
# and its three fc layers: four pools take 32x32 to 2x2, averaged to 1x1 before the output layer.
VGG_PLANS: dict[int, tuple[int | str, ...]] = {
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}


class VGG(nn.Module):
    """A CIFAR VGG (conv-BatchNorm-ReLU per plan entry, max-pool at "M", avg-pool, fc to classes).

    >>> sum(isinstance(m, nn.Conv2d) for m in VGG((3, 32, 32), 10).modules())
    16
    >>> sum(isinstance(m, nn.Conv2d) for m in VGG((1, 28, 28), 10, VGG_PLANS[16]).modules())
    13
    """

    init_scheme = "kaiming_normal"

    def __init__(self, input_shape: tuple[int, ...], num_classes: int,
                 plan: Sequence[int | str] = VGG_PLANS[19]):
        super().__init__()
        if len(input_shape) != 3:
            raise ModelError(f"VGG needs (channels, height, width) inputs, got {input_shape}")
        c, h, w = input_shape
        pools = sum(v == "M" for v in plan)
        if h < 2**pools or w < 2**pools:
            raise ModelError(f"input {tuple(input_shape)} is too small for VGG's {pools} 2x2 max-pools "
                             f"(needs at least {2**pools}x{2**pools})")
        self.plan = tuple(plan)
        layers: list[nn.Module] = []
        for v in self.plan:
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
    """VGG-19 with batch norm (paper Sec. 4): 16 conv layers, 20,024,000 weights on 32x32x3."""
    return VGG(input_shape, num_classes, VGG_PLANS[19])


@register("vgg16")
def vgg16(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """VGG-16 with batch norm (Frankle et al. 2020): 13 conv layers, 14,715,584 weights on 32x32x3."""
    return VGG(input_shape, num_classes, VGG_PLANS[16])
