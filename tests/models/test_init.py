"""lth.models.init: seeded initialisation, its distributions and its exact draws."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lth.models import ModelError, build_model, initialize, prunable_tensors


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
        assert torch.equal(pa, pc) == n.endswith("bias"), n  # every weight differs; biases are all 0
    assert not torch.equal(a.hidden[0].weight, c.hidden[0].weight)


# First values of the first weight and last values of the last prunable weight, seed 0: initialize
# must draw the same theta0 for a seed whatever the code layout, or old runs stop reproducing.
PINNED_DRAWS = {
    "lenet300": ((1, 28, 28), [-0.048359, -0.0494981, -0.0107633], [-0.00046, 0.0094612]),
    "mlp-100-50": ((1, 8, 8), [-0.1243282, -0.1272569, -0.0276718], [-0.3417455, -0.2857358]),
    "conv2": ((3, 32, 32), [-0.0648385, -0.0663658, -0.0144311], [-0.0037171, -0.0723184]),
    "resnet20": ((3, 32, 32), [-0.3064148, -0.3136327, -0.0681989], [0.0631422, -0.0881211]),
}


@pytest.mark.parametrize("name", sorted(PINNED_DRAWS))
def test_init_draws_are_pinned(name):
    shape, first, last = PINNED_DRAWS[name]
    model = build_model(name, shape, 10)
    initialize(model, torch.Generator().manual_seed(0))
    w0 = next(model.parameters()).detach().flatten()[:3]
    w_last = list(prunable_tensors(model).values())[-1].detach().flatten()[-2:]
    assert torch.allclose(w0, torch.tensor(first), atol=1e-7, rtol=0)
    assert torch.allclose(w_last, torch.tensor(last), atol=1e-7, rtol=0)


def test_kaiming_normal_statistics_and_norm_layers():
    model = build_model("vgg19", (3, 32, 32), 10)
    for m in model.modules():  # make the BatchNorm values visibly different first
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 2, 3)
            nn.init.uniform_(m.bias, 2, 3)
    initialize(model, torch.Generator().manual_seed(2))
    w = model.features[-3].weight  # the last 512 -> 512 conv
    assert abs(w.std().item() - math.sqrt(2 / (512 * 9))) < 2e-4
    assert torch.count_nonzero(model.features[-3].bias) == 0
    bn = model.features[-2]
    assert torch.equal(bn.weight, torch.ones(512)) and torch.count_nonzero(bn.bias) == 0


def test_initialize_any_module_with_layernorm_and_embedding():
    model = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4), nn.Linear(4, 3))
    emb0 = model[0].weight.detach().clone()
    nn.init.constant_(model[1].weight, 5.0)
    initialize(model, torch.Generator().manual_seed(0))
    assert torch.equal(model[0].weight, emb0)  # embeddings keep PyTorch's own init
    assert torch.equal(model[1].weight, torch.ones(4)) and torch.count_nonzero(model[1].bias) == 0
    assert torch.count_nonzero(model[2].bias) == 0


def test_unknown_init_scheme_is_a_model_error():
    model = nn.Sequential(nn.Linear(3, 2))
    model.init_scheme = "orthogonal"
    with pytest.raises(ModelError, match="orthogonal"):
        initialize(model, torch.Generator().manual_seed(0))
