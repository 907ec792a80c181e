"""lth.models.mlp: LeNet-300-100 and the digits MLP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lth.models import MLP, build_model, output_parameter, prunable_parameters


@pytest.mark.parametrize("name, shape, hidden", [("lenet300", (1, 28, 28), (300, 100)),
                                                 ("mlp-100-50", (1, 8, 8), (100, 50))])
def test_layer_sizes(name, shape, hidden):
    model = build_model(name, shape, 10)
    assert isinstance(model, MLP) and model.init_scheme == "glorot_normal"
    sizes = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)]
    inp = shape[0] * shape[1] * shape[2]
    assert sizes == [(hidden[0], inp), (hidden[1], hidden[0]), (10, hidden[1])]
    assert prunable_parameters(model) == ["hidden.0.weight", "hidden.1.weight", "out.weight"]
    assert output_parameter(model) == "out.weight"


def test_mlp_flattens_any_input_shape():
    model = MLP(12, (5,), 3)
    assert model(torch.randn(4, 3, 2, 2)).shape == (4, 3)
    assert model(torch.randn(4, 12)).shape == (4, 3)
    assert build_model("lenet300", (3, 32, 32), 10).hidden[0].in_features == 3072
