"""Vectorised training of several units equals training them one at a time (same seeds)."""

from __future__ import annotations

import pytest
import torch

from lth.batched import UnitInput, supports_batching, train_many
from lth.config import TrainConfig
from lth.data import load_splits
from lth.models import build_model, initialize, prunable_parameters
from lth.train import TrainingDiverged, apply_mask_, train


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", val_size=300, split_seed=0)


def unit(seed: int, keep: float):
    m = build_model("mlp-100-50", (1, 8, 8), 10)
    initialize(m, torch.Generator().manual_seed(seed))
    params = dict(m.named_parameters())
    g = torch.Generator().manual_seed(seed + 1000)
    mask = {n: torch.rand(params[n].shape, generator=g) < keep for n in prunable_parameters(m)}
    apply_mask_(m, mask)
    return m, mask


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_batched_equals_one_at_a_time(digits, optimizer):
    cfg = TrainConfig(iterations=300, batch_size=32, optimizer=optimizer,
                      lr=1e-3 if optimizer == "adam" else 0.05, weight_decay=1e-4, eval_every=50)
    specs = [(0, 1.0), (1, 0.5), (2, 0.2), (3, 0.05)]
    inputs, singles = [], []
    for i, (seed, keep) in enumerate(specs):
        m, mask = unit(seed, keep)
        inputs.append(UnitInput({k: v.detach().clone() for k, v in m.state_dict().items()}, mask, 10 + i))
        singles.append(train(m, mask, digits, cfg, data_seed=10 + i))
    many = train_many(build_model("mlp-100-50", (1, 8, 8), 10), inputs, digits, cfg)
    for (seed, keep), a, b, u in zip(specs, singles, many, inputs):
        assert [h.iteration for h in a.history] == [h.iteration for h in b.history]
        for ha, hb in zip(a.history, b.history):
            assert hb.val_loss == pytest.approx(ha.val_loss, rel=1e-4, abs=1e-5)
            assert hb.test_accuracy == pytest.approx(ha.test_accuracy, abs=1 / 360 + 1e-9)
        for k in a.final_state:
            torch.testing.assert_close(b.final_state[k], a.final_state[k], rtol=1e-4, atol=1e-5)
        for k, m in u.mask.items():  # pruned weights exactly zero in the batched path too
            assert torch.count_nonzero(b.final_state[k][~m]) == 0


def test_units_are_independent_one_diverging_does_not_touch_the_others(digits):
    cfg = TrainConfig(iterations=100, batch_size=32, eval_every=50)
    m0, k0 = unit(0, 0.5)
    m1, k1 = unit(1, 0.5)
    s1 = {k: v.detach().clone() for k, v in m1.state_dict().items()}
    bad = {k: v.detach().clone() for k, v in m0.state_dict().items()}
    bad["hidden.0.weight"][0, 0] = float("nan")
    out = train_many(build_model("mlp-100-50", (1, 8, 8), 10),
                     [UnitInput(bad, k0, 0), UnitInput(s1, k1, 1)], digits, cfg)
    assert isinstance(out[0], TrainingDiverged)
    alone = train(m1, k1, digits, cfg, data_seed=1)
    assert out[1].history[-1].val_loss == pytest.approx(alone.history[-1].val_loss, rel=1e-4)


def test_models_with_batchnorm_or_dropout_are_not_batched():
    assert supports_batching(build_model("lenet300", (1, 28, 28), 10))
    assert supports_batching(build_model("conv2", (3, 32, 32), 10))
    assert not supports_batching(build_model("resnet20", (3, 32, 32), 10))
    assert not supports_batching(build_model("conv2-dropout", (3, 32, 32), 10))
