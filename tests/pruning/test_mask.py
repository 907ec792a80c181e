"""lth.pruning.mask: the dense mask, density and per-layer statistics, nesting, apply_mask."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lth.pruning import apply_mask, density, full_mask, is_nested, layer_stats, prune_layerwise
from tests.pruning.reference import LENET_SHAPES, rand_weights


def test_full_mask_is_all_true_bool_of_same_shape():
    params = {"a": torch.randn(3, 4), "b": torch.randn(2, 3, 5, 5), "c": nn.Parameter(torch.randn(7))}
    m = full_mask(params)
    assert list(m) == ["a", "b", "c"]
    for n, p in params.items():
        assert m[n].dtype == torch.bool and m[n].shape == p.shape and bool(m[n].all())


def test_is_nested_detects_violations():
    outer = {"a": torch.tensor([True, False, True]), "b": torch.tensor([[True, True]])}
    assert is_nested(outer, outer)
    assert is_nested({"a": torch.tensor([True, False, False]), "b": torch.tensor([[False, True]])}, outer)
    assert not is_nested({"a": torch.tensor([False, True, False]), "b": torch.tensor([[True, True]])}, outer)
    assert not is_nested(outer, {"a": outer["a"], "b": torch.tensor([[True, False]])})


def test_density_and_layer_stats_by_hand():
    mask = {
        "a": torch.tensor([[True, False], [True, True]]),
        "b": torch.tensor([False, False, False]),
        "c": torch.ones(2, 3, 1, 1, dtype=torch.bool),
    }
    assert density(mask) == pytest.approx(9 / 13, abs=1e-15)
    stats = layer_stats(mask)
    assert list(stats) == ["a", "b", "c"]
    assert stats["a"] == {"total": 4, "remaining": 3, "density": 0.75}
    assert stats["b"] == {"total": 3, "remaining": 0, "density": 0.0}
    assert stats["c"] == {"total": 6, "remaining": 6, "density": 1.0}
    for s in stats.values():
        assert type(s["total"]) is int and type(s["remaining"]) is int and type(s["density"]) is float
    assert density({"a": torch.ones(5, dtype=torch.bool)}) == 1.0
    assert density({"a": torch.zeros(5, dtype=torch.bool)}) == 0.0
    assert density({}) == 1.0


def test_density_weights_layers_by_size_not_average_of_densities():
    mask = {"big": torch.ones(90, dtype=torch.bool), "small": torch.zeros(10, dtype=torch.bool)}
    assert density(mask) == 0.9  # not (1.0 + 0.0) / 2
    s = layer_stats(mask)
    assert s["big"]["density"] == 1.0 and s["small"]["density"] == 0.0


def test_density_of_lenet_after_one_level():
    mask = full_mask({n: torch.empty(s) for n, s in LENET_SHAPES.items()})
    mask = prune_layerwise(rand_weights(LENET_SHAPES, 0), mask,
                           {"hidden.0.weight": 0.2, "hidden.1.weight": 0.2, "out.weight": 0.1})
    assert density(mask) == (188_160 + 24_000 + 900) / 266_200
    st_ = layer_stats(mask)
    assert st_["out.weight"] == {"total": 1000, "remaining": 900, "density": pytest.approx(0.9)}
    assert st_["hidden.0.weight"]["remaining"] == 188_160


# --------------------------------------------------------------------------- apply_mask


def test_apply_mask_zeroes_exactly_the_pruned_weights_and_nothing_else():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 4))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(1)
    mask = {"0.weight": torch.rand(3, 2, 3, 3, generator=g) < 0.5, "3.weight": torch.rand(4, 12, generator=g) < 0.5}
    apply_mask(model, mask)
    params = dict(model.named_parameters())
    for n, p in params.items():
        if n in mask:
            assert torch.equal(p[mask[n]], before[n][mask[n]]), n
            assert bool((p[~mask[n]] == 0).all()), n
        else:
            assert torch.equal(p, before[n]), n
    assert all(isinstance(p, nn.Parameter) for p in params.values())


def test_apply_mask_names_every_missing_name_and_wrong_shape():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    before = model[0].weight.detach().clone()
    mask = {"0.weight": torch.zeros(2, 3, dtype=torch.bool), "1.weight": torch.ones(3, 2, dtype=torch.bool),
            "2.weight": torch.ones(1, dtype=torch.bool), "0.gamma": torch.ones(1, dtype=torch.bool)}
    with pytest.raises(ValueError) as e:
        apply_mask(model, mask)
    msg = str(e.value)
    assert "'2.weight'" in msg and "'0.gamma'" in msg and "1.weight: mask (3, 2) vs parameter (2, 2)" in msg
    assert "0.weight" not in msg
    assert torch.equal(model[0].weight, before)  # nothing applied when anything is wrong


def test_apply_mask_refuses_a_torch_pruned_parameter():
    from torch.nn.utils import prune

    lin = nn.Linear(4, 4)
    prune.random_unstructured(lin, "weight", amount=0.5)
    with pytest.raises(ValueError, match="to_torch_prune"):
        apply_mask(lin, {"weight": torch.ones(4, 4, dtype=torch.bool)})
