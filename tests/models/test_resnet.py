"""lth.models.resnet: ResNet-20's size and the shortcuts it keeps dense (paper App. I)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lth.models import ModelError, build_model, output_parameter, prunable_parameters


def test_resnet20_counts_and_shortcuts_excluded():
    model = build_model("resnet20", (3, 32, 32), 10)
    names = prunable_parameters(model)
    params = dict(model.named_parameters())
    assert len(model.never_prune) == 2
    conv = sum(params[n].numel() for n in names if params[n].dim() == 4)
    assert math.isclose(conv, 270e3, rel_tol=0.02)


def test_resnet20_structure():
    model = build_model("resnet20", (3, 32, 32), 10)
    assert model.init_scheme == "kaiming_normal"
    assert model.never_prune == ("blocks.3.shortcut.0.weight", "blocks.6.shortcut.0.weight")
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 9 * 2 + 2  # stem, 9 blocks of 2, two 1x1 shortcuts
    assert output_parameter(model) == "out.weight" and "out.weight" in prunable_parameters(model)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    with pytest.raises(ModelError, match="channels, height, width"):
        build_model("resnet20", (3, 32), 10)
