"""lth.models.vgg: VGG-19 (paper Sec. 4, App. I) and VGG-16 (Frankle et al. 2020), one class, a plan per depth."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lth.models import VGG, VGG_PLANS, ModelError, build_model, prunable_parameters


@pytest.mark.parametrize("name, convs, widths", [
    ("vgg19", 16, [64] * 2 + [128] * 2 + [256] * 4 + [512] * 8),
    ("vgg16", 13, [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6),
])
def test_vgg_structure(name, convs, widths):
    model = build_model(name, (3, 32, 32), 10)
    assert isinstance(model, VGG) and model.init_scheme == "kaiming_normal"
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in layers] == widths and len(layers) == convs
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in layers)
    # batch norm after every convolution, four 2x2 max-pools, one linear layer from 512 features
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == convs
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4
    assert [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)] == [(10, 512)]
    assert prunable_parameters(model)[-1] == "out.weight" and len(prunable_parameters(model)) == convs + 1


def test_vgg16_and_vgg19_share_the_class_and_differ_only_in_the_plan():
    assert VGG_PLANS[19][:6] == VGG_PLANS[16][:6]
    assert [v for v in VGG_PLANS[19] if v != "M"] == [64, 64, 128, 128] + [256] * 4 + [512] * 8
    assert type(build_model("vgg16", (3, 32, 32), 10)) is type(build_model("vgg19", (3, 32, 32), 10))
    assert build_model("vgg16", (3, 32, 32), 10).plan == VGG_PLANS[16]


def test_vgg_on_28x28x1_pools_down_to_one_pixel():
    model = build_model("vgg19", (1, 28, 28), 10).eval()
    feats = model.features(torch.zeros(1, 1, 28, 28))
    assert feats.shape == (1, 512, 1, 1)  # 28 -> 14 -> 7 -> 3 -> 1


def test_vgg_refuses_non_images_and_images_smaller_than_its_pools():
    with pytest.raises(ModelError, match="channels, height, width"):
        build_model("vgg19", (784,), 10)
    with pytest.raises(ModelError, match=r"\(1, 8, 8\) is too small.*at least 16x16"):
        build_model("vgg16", (1, 8, 8), 10)
    assert build_model("vgg16", (3, 16, 16), 10).eval()(torch.zeros(1, 3, 16, 16)).shape == (1, 10)
