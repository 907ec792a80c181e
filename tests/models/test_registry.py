"""lth.models.registry: every registered model builds, runs forward and backward, and has the paper's
parameter counts; unknown names and misfitting inputs fail with messages that name them.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lth.models import (
    MODELS,
    ModelError,
    build_model,
    check_fit,
    initialize,
    model_names,
    prunable_parameters,
    register,
)
from tests.models.shapes import SHAPES


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


# Exact parameter counts of every model, and the paper's table: tests/models/test_zoo.py.


def test_unknown_model_lists_valid_names():
    with pytest.raises(ModelError) as e:
        build_model("lenet5", (1, 28, 28), 10)
    assert "lenet300" in str(e.value) and "resnet20" in str(e.value)


def test_model_names_sorted_and_registry_order_is_the_papers():
    assert model_names() == sorted(MODELS)
    assert list(MODELS)[:2] == ["lenet300", "mlp-100-50"]
    assert list(MODELS)[-3:] == ["resnet20", "vgg19", "vgg16"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_build_model_gives_a_fresh_module_each_call(name):
    a, b = build_model(name, SHAPES[name], 10), build_model(name, SHAPES[name], 10)
    assert a is not b
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    assert all(pa is not pb for pa, pb in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_check_fit_accepts_the_test_shape_and_names_the_data_set_otherwise(name):
    check_fit(name, SHAPES[name], 10, dataset="toy")
    if name in ("lenet300", "mlp-100-50"):
        return  # fully connected models flatten any input shape
    for bad in [(7,), (3, 1, 1)]:  # not an image; an image too small (for vgg19: in the forward pass)
        if name == "resnet20" and bad == (3, 1, 1):
            continue  # stride-2 convolutions with padding take a 1x1 image
        with pytest.raises(ModelError) as e:
            check_fit(name, bad, 10, dataset="toy")
        assert repr(name) in str(e.value) and "toy" in str(e.value) and str(bad) in str(e.value)


def test_check_fit_rejects_wrong_output_width():
    @register("test-wrong-width")
    def wrong(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes + 1))

    try:
        with pytest.raises(ModelError, match=r"outputs of shape \(11,\), expected \(10,\)"):
            check_fit("test-wrong-width", (1, 4, 4), 10, dataset="toy")
    finally:
        del MODELS["test-wrong-width"]


def test_builder_errors_become_model_errors_naming_model_and_shape():
    with pytest.raises(ModelError, match=r"'conv2'.*\(1, 28\)"):
        build_model("conv2", (1, 28), 10)

    @register("test-raises")
    def raises(input_shape, num_classes):
        return nn.Linear(input_shape[5], num_classes)  # IndexError on short shapes

    try:
        with pytest.raises(ModelError, match=r"'test-raises' cannot take inputs of shape \(1, 2\)"):
            build_model("test-raises", (1, 2), 10)
    finally:
        del MODELS["test-raises"]


def test_register_refuses_a_name_twice():
    with pytest.raises(RuntimeError, match="lenet300"):
        register("lenet300")(lambda s, k: nn.Linear(1, k))
    assert MODELS["lenet300"].__name__ == "lenet300"


def test_every_model_has_a_prunable_set_covering_most_weights():
    for name in MODELS:
        model = build_model(name, SHAPES[name], 10)
        params = dict(model.named_parameters())
        pruned = sum(params[n].numel() for n in prunable_parameters(model))
        assert pruned > 0.95 * sum(p.numel() for p in params.values()), name
