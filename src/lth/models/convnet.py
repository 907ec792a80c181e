"""Conv-2/4/6 (paper Fig. 2): VGG-style 3x3 convolutions for CIFAR-10, with and without dropout."""

from __future__ import annotations

import torch
from torch import nn

from .registry import ModelError, register


class ConvNet(nn.Module):
    """Conv-2/4/6: pairs of 3x3 conv+ReLU, each pair followed by 2x2 max-pool, then fc 256-256.

    >>> ConvNet((3, 32, 32), (64, 64), 10).fc[2].weight.shape  # Conv-2: 64 x 16 x 16 features
    torch.Size([256, 16384])
    """

    init_scheme = "glorot_normal"

    def __init__(self, input_shape: tuple[int, ...], widths: tuple[int, ...], num_classes: int,
                 dropout: float = 0.0):
        super().__init__()
        if len(input_shape) != 3:
            raise ModelError(f"Conv networks need (channels, height, width) inputs, got {input_shape}")
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
            c = width
            if i % 2 == 1:
                if h < 2 or w < 2:
                    raise ModelError(f"input {input_shape} is too small for {len(widths)} conv layers")
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * h * w, 256), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(256, 256), nn.ReLU(), nn.Dropout(dropout),
        )
        self.out = nn.Linear(256, num_classes)
        self.output_weight = "out.weight"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc(self.features(x)))


# Conv-2/4/6 widths from paper Fig. 2; the "-dropout" variants use p = 0.5 (paper Sec. 3, Fig. 8).
CONV_WIDTHS = {2: (64, 64), 4: (64, 64, 128, 128), 6: (64, 64, 128, 128, 256, 256)}

for _n, _widths in CONV_WIDTHS.items():
    register(f"conv{_n}")(lambda s, k, _w=_widths: ConvNet(s, _w, k))
    register(f"conv{_n}-dropout")(lambda s, k, _w=_widths: ConvNet(s, _w, k, dropout=0.5))
