"""The model zoo: registry name -> nn.Module builder, and which parameters a mask covers.

Architectures follow Frankle & Carbin (2019), Figure 2 / Table 1: LeNet-300-100, Conv-2/4/6
(VGG-style 3x3 convolutions, max-pool after each pair, fc 256-256-10), a CIFAR ResNet-20 and
VGG-19; plus VGG-16 (Frankle et al. 2020). docs/MODELS.md lists their sizes (``lth models``).
The zoo knows nothing about pruning schedules or the lottery driver; it only says which
weights are prunable, which layer is the output layer and which layers must never be pruned.

Importing this package registers every family (one module each: mlp, convnet, resnet, vgg).

>>> import torch
>>> from lth.models import build_model, initialize, prunable_parameters
>>> model = build_model("lenet300", (1, 28, 28), 10)
>>> initialize(model, torch.Generator().manual_seed(0))
>>> prunable_parameters(model)
['hidden.0.weight', 'hidden.1.weight', 'out.weight']
"""

from __future__ import annotations

# Each family registers itself on import; this order is MODELS' iteration order (paper Fig. 2's).
# isort: off
from .mlp import MLP
from .convnet import CONV_WIDTHS, ConvNet
from .resnet import BasicBlock, CifarResNet
from .vgg import VGG, VGG_PLANS
# isort: on
from .init import initialize
from .introspection import (
    CONV_TYPES,
    DEFAULT_PRUNABLE_TYPES,
    ParameterCounts,
    get_tensor,
    is_conv_parameter,
    output_parameter,
    parameter_counts,
    prunable_parameters,
    prunable_tensors,
)
from .registry import MODELS, ModelBuilder, ModelError, build_model, check_fit, model_names, register

__all__ = [
    "CONV_TYPES",
    "CONV_WIDTHS",
    "DEFAULT_PRUNABLE_TYPES",
    "MLP",
    "MODELS",
    "VGG",
    "VGG_PLANS",
    "BasicBlock",
    "CifarResNet",
    "ConvNet",
    "ModelBuilder",
    "ModelError",
    "ParameterCounts",
    "build_model",
    "check_fit",
    "get_tensor",
    "initialize",
    "is_conv_parameter",
    "model_names",
    "output_parameter",
    "parameter_counts",
    "prunable_parameters",
    "prunable_tensors",
    "register",
]
