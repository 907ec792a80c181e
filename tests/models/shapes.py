"""Input shapes for tests parametrized over the registry: each model's own data set's, and the two
image shapes every model must take (CIFAR-10's 32x32x3 and MNIST/Fashion-MNIST's 28x28x1)."""

from __future__ import annotations

CIFAR, MNIST, DIGITS = (3, 32, 32), (1, 28, 28), (1, 8, 8)

# The input shape of the data set each model's presets train it on.
SHAPES = {
    "lenet300": MNIST, "mlp-100-50": DIGITS,
    "conv2": CIFAR, "conv4": CIFAR, "conv6": CIFAR,
    "conv2-dropout": CIFAR, "conv4-dropout": CIFAR, "conv6-dropout": CIFAR,
    "resnet20": CIFAR, "vgg19": CIFAR, "vgg16": CIFAR,
}
