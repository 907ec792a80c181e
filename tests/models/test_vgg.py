"""lth.models.vgg: VGG-19's size (paper App. I)."""

from __future__ import annotations

import math

import pytest
from torch import nn

from lth.models import ModelError, build_model, prunable_parameters


def _conv_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))


def test_vgg19_counts():
    model = build_model("vgg19", (3, 32, 32), 10)
    assert math.isclose(_conv_weights(model), 20.0e6, rel_tol=0.01)


def test_vgg19_structure():
    model = build_model("vgg19", (3, 32, 32), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [v for v in model.PLAN if v != "M"]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 16
    assert prunable_parameters(model)[-1] == "out.weight" and len(prunable_parameters(model)) == 17
    with pytest.raises(ModelError, match="channels, height, width"):
        build_model("vgg19", (784,), 10)
