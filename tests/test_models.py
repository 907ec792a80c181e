"""Every registered model: forward, backward, no NaN, the paper's parameter counts, prunable sets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lth.models import (
    MODELS,
    ModelError,
    build_model,
    initialize,
    output_parameter,
    prunable_parameters,
)

SHAPES = {
    "lenet300": (1, 28, 28), "mlp-100-50": (1, 8, 8),
    "conv2": (3, 32, 32), "conv4": (3, 32, 32), "conv6": (3, 32, 32),
    "conv2-dropout": (3, 32, 32), "conv4-dropout": (3, 32, 32), "conv6-dropout": (3, 32, 32),
    "resnet20": (3, 32, 32), "vgg19": (3, 32, 32),
}

# Paper Table 1 / Fig. 2: prunable weights (all / conv). Our counts are exact; the table rounds.
PAPER_WEIGHTS = {
    "lenet300": (266_200, 266_200, 0),
    "conv2": (4_300_992, 4.3e6, 38e3),
    "conv4": (2_425_024, 2.4e6, 260e3),
    "conv6": (2_261_184, 1.7e6, 1.1e6),
}


def test_every_model_has_a_test_shape():
    assert set(MODELS) == set(SHAPES)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward_no_nan(name):
    torch.manual_seed(0)
    model = build_model(name, SHAPES[name], 10)
    initialize(model, torch.Generator().manual_seed(0))
    x = torch.randn(4, *SHAPES[name])
    out = model(x)
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        assert torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("name", sorted(MODELS))
def test_prunable_set_is_linear_and_conv_weights_only(name):
    model = build_model(name, SHAPES[name], 10)
    names = prunable_parameters(model)
    params = dict(model.named_parameters())
    assert names and all(n.endswith("weight") and params[n].dim() >= 2 for n in names)
    assert output_parameter(model) in names
    never = set(getattr(model, "never_prune", ()))
    assert not never & set(names)


def _conv_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", sorted(PAPER_WEIGHTS))
def test_parameter_counts_match_the_paper(name):
    exact, paper_all, paper_conv = PAPER_WEIGHTS[name]
    model = build_model(name, SHAPES[name], 10)
    params = dict(model.named_parameters())
    total = sum(params[n].numel() for n in prunable_parameters(model))
    assert total == exact
    conv = _conv_weights(model)
    if paper_conv:
        # the table's conv figures are rounded to two significant digits
        assert math.isclose(conv, paper_conv, rel_tol=0.05), conv
    if name != "conv6":
        assert math.isclose(total, paper_all, rel_tol=0.02), total


def test_conv6_fc_and_conv_counts():
    # Conv-6 has 1.1M conv weights; fc 4096*256 + 256*256 + 2560 = 1.12M. The paper's "1.7M" total
    # cannot be reconciled with its own layer list; we follow the layer list (see docs).
    model = build_model("conv6", SHAPES["conv6"], 10)
    pairs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256)]
    assert _conv_weights(model) == sum(9 * a * b for a, b in pairs) == 1_144_512
    fc = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    assert fc == 256 * 4 * 4 * 256 + 256 * 256 + 256 * 10


def test_resnet20_counts_and_shortcuts_excluded():
    model = build_model("resnet20", (3, 32, 32), 10)
    names = prunable_parameters(model)
    params = dict(model.named_parameters())
    assert len(model.never_prune) == 2
    conv = sum(params[n].numel() for n in names if params[n].dim() == 4)
    assert math.isclose(conv, 270e3, rel_tol=0.02)


def test_vgg19_counts():
    model = build_model("vgg19", (3, 32, 32), 10)
    assert math.isclose(_conv_weights(model), 20.0e6, rel_tol=0.01)


def test_glorot_normal_init_statistics():
    model = build_model("lenet300", (1, 28, 28), 10)
    initialize(model, torch.Generator().manual_seed(1))
    w = model.hidden[0].weight
    assert abs(w.std().item() - math.sqrt(2 / (784 + 300))) < 2e-3
    assert abs(w.mean().item()) < 1e-3
    assert torch.count_nonzero(model.hidden[0].bias) == 0


def test_same_seed_same_init_different_seed_different_init():
    a, b, c = (build_model("lenet300", (1, 28, 28), 10) for _ in range(3))
    initialize(a, torch.Generator().manual_seed(3))
    initialize(b, torch.Generator().manual_seed(3))
    initialize(c, torch.Generator().manual_seed(4))
    for (n, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), n
    assert not torch.equal(a.hidden[0].weight, c.hidden[0].weight)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ModelError) as e:
        build_model("lenet5", (1, 28, 28), 10)
    assert "lenet300" in str(e.value) and "resnet20" in str(e.value)


def test_prunable_parameters_on_any_module():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    assert prunable_parameters(model) == ["0.weight", "3.weight"]
    assert output_parameter(model) == "3.weight"
