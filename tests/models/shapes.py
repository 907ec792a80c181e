"""An input shape for every registered model (tests parametrized over the registry use it)."""

from __future__ import annotations

SHAPES = {
    "lenet300": (1, 28, 28), "mlp-100-50": (1, 8, 8),
    "conv2": (3, 32, 32), "conv4": (3, 32, 32), "conv6": (3, 32, 32),
    "conv2-dropout": (3, 32, 32), "conv4-dropout": (3, 32, 32), "conv6-dropout": (3, 32, 32),
    "resnet20": (3, 32, 32), "vgg19": (3, 32, 32),
}
