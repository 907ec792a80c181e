"""ResNet-20 for CIFAR-10 (He et al. 2016), the paper's "Resnet-18" (Sec. 4, App. I)."""

from __future__ import annotations

import torch
from torch import nn

from .registry import ModelError, register


class BasicBlock(nn.Module):
    """Two 3x3 conv+BatchNorm layers with an identity shortcut, or a 1x1 conv where shapes change."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-20 for CIFAR (He et al. 2016): 16 filters, 3 stages x 3 blocks, avg-pool, fc.

    The paper's table calls it "Resnet-18"; 274K weights. The 1x1 downsampling shortcuts and the
    output layer are not pruned (paper App. I protocol).

    >>> CifarResNet((3, 32, 32), 10).never_prune
    ('blocks.3.shortcut.0.weight', 'blocks.6.shortcut.0.weight')
    """

    init_scheme = "kaiming_normal"

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, blocks: int = 3,
                 width: int = 16):
        super().__init__()
        if len(input_shape) != 3:
            raise ModelError(f"ResNet needs (channels, height, width) inputs, got {input_shape}")
        self.conv = nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        stages = []
        cin = width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks):
                stages.append(BasicBlock(cin, cout, 2 if (i > 0 and b == 0) else 1))
                cin = cout
        self.blocks = nn.Sequential(*stages)
        self.out = nn.Linear(cin, num_classes)
        self.output_weight = "out.weight"
        self.never_prune = tuple(
            f"{n}.weight" for n, m in self.named_modules()
            if n.endswith("shortcut.0") and isinstance(m, nn.Conv2d)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.out(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register("resnet20")
def resnet20(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """ResNet-20 (the paper's "Resnet-18"): 270,896 conv+fc weights on 32x32x3, 2,560 of them in the
    two 1x1 shortcuts that stay dense."""
    return CifarResNet(input_shape, num_classes)
