"""lth.analysis.interpolation: interpolated weights, errors along a path, barriers, and BatchNorm
statistics recomputed at a point, each against a value computed independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lth.analysis import (
    alphas,
    error_barrier,
    error_rate,
    has_batchnorm,
    interpolate,
    path_errors,
    recompute_batchnorm,
)


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(5, 7, generator=g), "b": torch.randn(5, generator=g) * 1e-30,
            "bn.num_batches_tracked": torch.tensor(seed)}


def test_interpolation_endpoints_equal_the_inputs_exactly():
    a, b = _state(1), _state(2)
    start, end = interpolate(a, b, 0.0), interpolate(a, b, 1.0)
    for name in ("w", "b"):
        assert torch.equal(start[name], a[name]) and torch.equal(end[name], b[name])
        assert torch.allclose(interpolate(a, b, 0.5)[name], (a[name] + b[name]) / 2, rtol=1e-6, atol=1e-6)
    # an integer buffer is copied from the first state dict (recomputed where it matters)
    assert int(interpolate(a, b, 0.7)["bn.num_batches_tracked"]) == 1
    assert start["w"] is not a["w"]  # a new tensor: loading it into a model never aliases an input


def test_interpolation_refuses_state_dicts_of_different_networks():
    with pytest.raises(ValueError, match="different entries"):
        interpolate({"w": torch.zeros(2)}, {"v": torch.zeros(2)}, 0.5)
    with pytest.raises(ValueError, match="shapes"):
        interpolate({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, 0.5)


def test_error_barrier_of_hand_lists():
    assert error_barrier([0.10, 0.30, 0.20]) == pytest.approx(0.30 - 0.15)
    assert error_barrier([0.10, 0.20, 0.30]) == pytest.approx(0.30 - 0.20)  # monotone path: max is an endpoint
    assert error_barrier([0.05, 0.01, 0.05]) == 0.0  # a dip is no barrier
    assert error_barrier([2.0, 9.0, 4.0]) == 6.0  # percentages give percentage points
    assert error_barrier([0.3, 0.3]) == 0.0
    with pytest.raises(ValueError, match="at least its two endpoints"):
        error_barrier([0.1])
    with pytest.raises(ValueError, match="finite"):
        error_barrier([0.1, float("nan"), 0.2])


def test_alphas_are_evenly_spaced_and_include_both_ends():
    xs = alphas(30)
    assert len(xs) == 30 and xs[0] == 0.0 and xs[-1] == 1.0
    assert np.allclose(np.diff(xs), 1 / 29)
    with pytest.raises(ValueError):
        alphas(1)


def _linear(w: list[list[float]]) -> dict[str, torch.Tensor]:
    return {"weight": torch.tensor(w), "bias": torch.zeros(2)}


def test_barrier_of_a_constructed_pair_matches_the_hand_computed_value():
    """Two linear classifiers of 2-D points: copy a's class-0 margin is x1, copy b's is x2, so on
    the path it is (1 - alpha) x1 + alpha x2. Of three points, p = (1, 1) is class 0 everywhere
    on the path; q = (3, -1), label 1, is misclassified until alpha = 0.75; r = (-1, 3), label 1,
    is misclassified from alpha = 0.25. At alphas 0, .2, .4, .6, .8, 1 the errors are
    1/3, 1/3, 2/3, 2/3, 1/3, 1/3: a barrier of exactly 1/3."""
    model = nn.Linear(2, 2)
    a = _linear([[0.5, 0.0], [-0.5, 0.0]])  # logit0 - logit1 = x1
    b = _linear([[0.0, 0.5], [0.0, -0.5]])  # logit0 - logit1 = x2
    x = torch.tensor([[1.0, 1.0], [3.0, -1.0], [-1.0, 3.0]])
    y = torch.tensor([0, 1, 1])
    train, test = path_errors(model, a, b, alphas(6), [(x, y), (x, y)])
    assert train == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3, 1 / 3, 1 / 3])
    assert test == train
    assert error_barrier(train) == pytest.approx(1 / 3)


def test_errors_along_the_path_match_a_numpy_brute_force():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    a = {k: torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}
    b = {k: torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}
    x = torch.randn(500, 4, generator=g)
    y = torch.randint(0, 3, (500,), generator=g)
    xs = alphas(30)
    (got,) = path_errors(model, a, b, xs, [(x, y)], batch_size=64)
    an, bn_, xn, yn = ({k: v.double().numpy() for k, v in a.items()}, {k: v.double().numpy() for k, v in b.items()},
                       x.double().numpy(), y.numpy())
    want = []
    for t in xs:
        w = (1 - t) * an["0.weight"] + t * bn_["0.weight"]
        c = (1 - t) * an["0.bias"] + t * bn_["0.bias"]
        want.append(float(np.mean((xn @ w.T + c).argmax(1) != yn)))
    assert got == pytest.approx(want, abs=1 / 500 + 1e-12)  # float32 vs float64 may flip a near-tie
    assert sum(abs(g_ - w_) > 1e-12 for g_, w_ in zip(got, want)) <= 2
    assert max(want) > min(want)  # the path is not flat: the comparison means something


def test_identical_endpoints_have_a_zero_barrier_on_both_splits(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    train, test = path_errors(model, state, state, alphas(7), [(digits.train_x, digits.train_y),
                                                                (digits.test_x, digits.test_y)])
    assert error_barrier(train) == 0.0 and error_barrier(test) == 0.0
    assert len(set(train)) == 1 and len(set(test)) == 1 and 0 < train[0] < 1


class BNNet(nn.Module):
    """Linear -> Dropout -> BatchNorm -> ReLU -> Linear: dropout before the BatchNorm would change
    the statistics if it were on while they are recomputed."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.drop = nn.Dropout(0.5)
        self.bn = nn.BatchNorm1d(4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.drop(self.fc1(x)))))


def _bn_pair():
    g = torch.Generator().manual_seed(3)
    model = BNNet()
    a = {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone())
         for k, v in model.state_dict().items()}
    b = {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone())
         for k, v in model.state_dict().items()}
    for s in (a, b):  # endpoint statistics that fit no data: they must not leak into any point
        s["bn.running_mean"] = torch.full((4,), 1000.0)
        s["bn.running_var"] = torch.full((4,), 1e-3)
    x = torch.randn(240, 3, generator=g)
    return model, a, b, x


def test_batchnorm_statistics_are_recomputed_under_the_interpolated_weights():
    model, a, b, x = _bn_pair()
    batches = list(x.split(60))
    mid = interpolate(a, b, 0.3)
    model.load_state_dict(mid)
    model.train()  # recompute must switch dropout off whatever mode it finds
    recompute_batchnorm(model, batches)
    # independently: the interpolated first layer's outputs, per batch mean and unbiased variance,
    # averaged over batches (PyTorch's cumulative average with momentum=None)
    xn = x.double().numpy()
    h = [xb @ mid["fc1.weight"].double().numpy().T + mid["fc1.bias"].double().numpy() for xb in np.split(xn, 4)]
    assert np.allclose(model.bn.running_mean.double().numpy(), np.mean([hb.mean(0) for hb in h], 0), atol=1e-5)
    assert np.allclose(model.bn.running_var.double().numpy(), np.mean([hb.var(0, ddof=1) for hb in h], 0),
                       atol=1e-5)
    assert int(model.bn.num_batches_tracked) == 4
    assert model.bn.momentum == 0.1 and not model.training and not model.bn.training
    assert has_batchnorm(model) and not has_batchnorm(nn.Linear(2, 2))


def test_path_errors_recompute_batchnorm_at_every_point_endpoints_included():
    model, a, b, x = _bn_pair()
    y = (x[:, 0] > 0).long()
    batches = list(x.split(60))
    xs = [0.0, 0.5, 1.0]
    (got,) = path_errors(model, a, b, xs, [(x, y)], bn_batches=batches)
    for t, e in zip(xs, got):  # the same point by hand: stored statistics replaced by recomputed ones
        ref = BNNet()
        ref.load_state_dict(interpolate(a, b, t))
        recompute_batchnorm(ref, batches)
        assert e == error_rate(ref, x, y)
    # the model holds the last point (alpha 1, copy b) with recomputed, not its stored, statistics
    assert torch.equal(model.bn.running_mean, ref.bn.running_mean)
    assert model.bn.running_mean.abs().max() < 100 and not torch.equal(model.bn.running_var, b["bn.running_var"])
    with pytest.raises(ValueError, match="bn_batches"):
        path_errors(model, a, b, xs, [(x, y)])


def test_the_docstring_examples_run():
    import doctest

    import lth.analysis.interpolation as module

    result = doctest.testmod(module, verbose=False)
    assert result.attempted >= 5 and result.failed == 0
