"""lth.analysis.instability: the error barrier on paths whose errors are known by hand, and batch
norm statistics recomputed at interpolated points."""

from __future__ import annotations

import doctest

import pytest
import torch
from torch import nn

import lth.analysis.instability as instability
from lth.analysis.instability import error_barrier, interpolate, path_errors, recompute_batchnorm


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_docstring_examples_run():
    assert doctest.testmod(instability).failed == 0


def test_the_barrier_of_two_identical_endpoints_is_zero():
    model = mlp(0)
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (200,), generator=torch.Generator().manual_seed(2))
    w = {k: v.clone() for k, v in model.state_dict().items()}
    path = path_errors(model, w, w, x, y, points=30)
    assert len(path.errors) == 30 and len(set(path.errors)) == 1
    assert path.barrier == 0.0


def test_a_path_through_a_dead_midpoint_has_the_barrier_computed_by_hand():
    # logits = [v u x, -v u x]: the endpoints (u, v) = (1, 1) and (-1, -1) are the same function, and
    # in between the logits are scaled by (1 - 2a)^2 > 0, except at a = 1/2, where they are all 0 and
    # argmax's tie goes to class 0: the 3 of 5 examples of class 1 are wrong there, none elsewhere.
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 2, bias=False))
    a = {"0.weight": torch.tensor([[1.0]]), "1.weight": torch.tensor([[1.0], [-1.0]])}
    b = {"0.weight": torch.tensor([[-1.0]]), "1.weight": torch.tensor([[-1.0], [1.0]])}
    x = torch.tensor([[1.0], [2.0], [-1.0], [-2.0], [-3.0]])
    y = torch.tensor([0, 0, 1, 1, 1])
    path = path_errors(model, a, b, x, y, points=5)
    assert path.alphas == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert path.errors == (0.0, 0.0, 0.6, 0.0, 0.0)
    assert path.barrier == pytest.approx(0.6)
    even = path_errors(model, a, b, x, y, points=30)  # a = 1/2 is not among 30 evenly spaced points
    assert even.barrier == 0.0


def test_error_barrier_subtracts_the_mean_of_the_endpoints():
    assert error_barrier([0.1, 0.5, 0.3]) == pytest.approx(0.3)
    assert error_barrier([0.3, 0.2, 0.1]) == pytest.approx(0.1)  # the max may be an endpoint
    with pytest.raises(ValueError):
        error_barrier([0.1])


def test_interpolation_endpoints_are_the_inputs_exactly_and_integers_are_kept():
    a = {"w": torch.randn(5), "n": torch.tensor(3)}
    b = {"w": torch.randn(5), "n": torch.tensor(7)}
    assert torch.equal(interpolate(a, b, 0.0)["w"], a["w"]) and torch.equal(interpolate(a, b, 1.0)["w"], b["w"])
    mid = interpolate(a, b, 0.5)
    assert torch.allclose(mid["w"], (a["w"] + b["w"]) / 2) and int(mid["n"]) == 3
    with pytest.raises(ValueError, match="different names"):
        interpolate(a, {"w": b["w"]}, 0.5)


def test_batchnorm_statistics_are_those_of_the_interpolated_weights_on_the_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    a = {k: v.clone() for k, v in model.state_dict().items()}
    b = {k: (v + torch.randn_like(v)) if v.is_floating_point() else v.clone() for k, v in a.items()}
    x = torch.randn(500, 3, generator=torch.Generator().manual_seed(3))
    model.load_state_dict(interpolate(a, b, 0.3))
    recompute_batchnorm(model, x, batch_size=128)
    w = 0.7 * a["0.weight"] + 0.3 * b["0.weight"]
    bias = 0.7 * a["0.bias"] + 0.3 * b["0.bias"]
    h = (x.double() @ w.double().T + bias.double())
    batches = h.split(128)  # the documented rule: the average of the batches' statistics
    bn = model[1]
    assert torch.allclose(bn.running_mean.double(), sum(c.mean(0) for c in batches) / len(batches), atol=1e-5)
    assert torch.allclose(bn.running_var.double(), sum(c.var(0) for c in batches) / len(batches), rtol=1e-4)
    assert not model.training and bn.momentum == 0.1


def test_a_batchnorm_model_needs_training_data_for_its_statistics():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    w = model.state_dict()
    with pytest.raises(ValueError, match="bn_data"):
        path_errors(model, w, w, torch.randn(10, 3), torch.zeros(10, dtype=torch.long))
