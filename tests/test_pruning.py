"""Tests for lth.pruning (pure mask math) and the pruning plan in lth.lottery.

Every mask is checked for exact equality against an independent reference: a brute-force numpy
implementation of the documented rule (prune floor(p * r + 0.5) of the r survivors, smallest
|w| first, ties to the lower flat index, global = layers concatenated in the order of ``names``)
and, on tie-free continuous weights, PyTorch's own ``torch.nn.utils.prune``. Nothing here trains
a network or touches files.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune as tprune

from lth.config import ExperimentConfig
from lth.lottery import expected_weights_remaining, global_pool, layer_rates, next_mask
from lth.models import MODELS, build_model, output_parameter, prunable_parameters
from lth.presets import get_preset
from lth.pruning import (
    density,
    full_mask,
    is_nested,
    keep_count_global,
    keep_counts_layerwise,
    layer_stats,
    paper_lenet_remaining,
    prune_count,
    prune_global,
    prune_global_to_count,
    prune_layerwise,
    prune_layerwise_to_counts,
    random_mask_like,
)

HYP = settings(max_examples=60, deadline=None, database=None)

LENET_SHAPES = {"hidden.0.weight": (300, 784), "hidden.1.weight": (100, 300), "out.weight": (10, 100)}


# --------------------------------------------------------------------------- references & helpers


def ref_count(remaining: int, rate: float) -> int:
    """The documented rounding rule, restated: floor(p * r + 0.5)."""
    return math.floor(rate * remaining + 0.5)


def np_prune(w: np.ndarray, m: np.ndarray, n_prune: int) -> np.ndarray:
    """Brute force: among survivors of ``m`` drop the ``n_prune`` smallest |w| (stable order)."""
    flat_m = m.reshape(-1).copy()
    alive = np.flatnonzero(flat_m)
    order = np.argsort(np.abs(w.reshape(-1))[alive], kind="stable")
    flat_m[alive[order[:n_prune]]] = False
    return flat_m.reshape(m.shape)


def np_prune_global(ws: list[np.ndarray], ms: list[np.ndarray], n_prune: int) -> list[np.ndarray]:
    """Global brute force over the concatenation of the layers in the given order."""
    cat_w = np.concatenate([w.reshape(-1) for w in ws]) if ws else np.zeros(0)
    cat_m = np.concatenate([m.reshape(-1) for m in ms]) if ms else np.zeros(0, dtype=bool)
    cat_m = np_prune(cat_w, cat_m, n_prune)
    out, off = [], 0
    for m in ms:
        out.append(cat_m[off: off + m.size].reshape(m.shape))
        off += m.size
    return out


def rand_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=g) for n, s in shapes.items()}


def counts(mask: dict[str, torch.Tensor]) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in mask.items()}


def assert_no_ties(w: torch.Tensor) -> None:
    a = w.detach().abs().flatten()
    assert torch.unique(a).numel() == a.numel(), "test precondition: continuous weights, no ties"


def lenet() -> nn.Module:
    return build_model("lenet300", (1, 28, 28), 10)


def lenet_cfg(**prune_changes) -> ExperimentConfig:
    d = get_preset("lenet300-mnist").to_dict()
    d["prune"].update(prune_changes)
    return ExperimentConfig.from_dict(d)


# --------------------------------------------------------------------------- prune_count


@pytest.mark.parametrize(
    "remaining, rate, expected",
    [
        (0, 0.2, 0),
        (1, 0.2, 0),  # 0.2 -> 0
        (3, 0.2, 1),  # 0.6 -> 1
        (5, 0.1, 1),  # 0.5 -> 1 (round half up)
        (10, 0.25, 3),  # 2.5 -> 3
        (4, 0.125, 1),  # 0.5 -> 1
        (3, 0.5, 2),  # 1.5 -> 2
        (7, 0.5, 4),  # 3.5 -> 4
        (235_200, 0.2, 47_040),
        (1_000, 0.1, 100),
        (900, 0.1, 90),
        (9, 0.1, 1),  # 0.9 -> 1
        (4, 0.1, 0),  # 0.4 -> 0
        (100, 0.0, 0),
        (2, 0.999, 2),
    ],
)
def test_prune_count_round_half_up(remaining, rate, expected):
    assert prune_count(remaining, rate) == expected
    assert isinstance(prune_count(remaining, rate), int)


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1, float("nan")])
def test_prune_count_rejects_rates_outside_unit_interval(rate):
    with pytest.raises(ValueError):
        prune_count(10, rate)


def test_full_mask_is_all_true_bool_of_same_shape():
    params = {"a": torch.randn(3, 4), "b": torch.randn(2, 3, 5, 5), "c": nn.Parameter(torch.randn(7))}
    m = full_mask(params)
    assert list(m) == ["a", "b", "c"]
    for n, p in params.items():
        assert m[n].dtype == torch.bool and m[n].shape == p.shape and bool(m[n].all())


# --------------------------------------------------------------------------- 1. layerwise vs numpy


SHAPES_LAYERWISE = {
    "fc": (40, 25),
    "conv": (8, 4, 3, 3),
    "conv_rect": (5, 6, 2, 3),
    "out": (10, 13),
    "tiny": (1, 3),
}


@pytest.mark.parametrize("rate", [0.2, 0.1, 0.15, 0.5, 0.37, 0.9])
@pytest.mark.parametrize("same_weights", [True, False], ids=["fixed-w", "retrained-w"])
def test_layerwise_matches_numpy_reference_over_levels(rate, same_weights):
    rates = {n: rate for n in SHAPES_LAYERWISE}
    rates["out"] = rate / 2  # a different rate in one layer
    mask = full_mask({n: torch.empty(s) for n, s in SHAPES_LAYERWISE.items()})
    ref = {n: np.ones(s, dtype=bool) for n, s in SHAPES_LAYERWISE.items()}
    for level in range(6):
        w = rand_weights(SHAPES_LAYERWISE, seed=0 if same_weights else 100 + level)
        mask = prune_layerwise(w, mask, rates)
        for n in SHAPES_LAYERWISE:
            ref[n] = np_prune(w[n].numpy(), ref[n], ref_count(int(ref[n].sum()), rates[n]))
            assert mask[n].dtype == torch.bool and mask[n].shape == SHAPES_LAYERWISE[n]
            np.testing.assert_array_equal(mask[n].numpy(), ref[n], err_msg=f"{n} level {level + 1}")


def test_layerwise_prunes_the_smallest_magnitudes_by_hand():
    w = {"a": torch.tensor([[0.5, -0.1, 3.0], [-2.0, 0.05, 1.0]])}
    m = prune_layerwise(w, full_mask(w), {"a": 0.5})  # prune 3: |0.05|, |-0.1|, |0.5|
    assert m["a"].tolist() == [[False, False, True], [True, False, True]]
    m2 = prune_layerwise(w, m, {"a": 0.5})  # 3 left, prune floor(1.5 + 0.5) = 2: 1.0 then -2.0
    assert m2["a"].tolist() == [[False, False, True], [False, False, False]]


def test_layerwise_ignores_values_of_already_pruned_weights():
    """Pruned weights never come back, whatever their (new) magnitude."""
    mask = {"a": torch.tensor([False, False, True, True, True, True])}
    w_new = {"a": torch.tensor([100.0, 100.0, 3.0, 4.0, 5.0, 6.0])}
    m = prune_layerwise(w_new, mask, {"a": 0.5})
    assert m["a"].tolist() == [False, False, False, False, True, True]


def test_layerwise_handles_non_contiguous_weights():
    base = torch.randn(6, 9, generator=torch.Generator().manual_seed(3))
    wt = base.t()  # non-contiguous view, logical (row-major) order is what counts
    assert not wt.is_contiguous()
    m = prune_layerwise({"a": wt}, full_mask({"a": wt}), {"a": 0.3})
    ref = np_prune(wt.contiguous().numpy(), np.ones(wt.shape, dtype=bool), ref_count(54, 0.3))
    np.testing.assert_array_equal(m["a"].numpy(), ref)


def test_to_counts_rejects_impossible_keep():
    w = {"a": torch.randn(4)}
    with pytest.raises(ValueError):
        prune_layerwise_to_counts(w, full_mask(w), {"a": 5})
    with pytest.raises(ValueError):
        prune_layerwise_to_counts(w, full_mask(w), {"a": -1})
    with pytest.raises(ValueError):
        prune_global_to_count(w, full_mask(w), ["a"], 5)


def test_inputs_are_not_mutated():
    w = rand_weights({"a": (5, 5), "b": (3, 3)}, 1)
    w_copy = {k: v.clone() for k, v in w.items()}
    mask = full_mask(w)
    mask["a"][0, 0] = False
    mask_copy = {k: v.clone() for k, v in mask.items()}
    prune_layerwise(w, mask, {"a": 0.5, "b": 0.5})
    prune_global(w, mask, 0.5, ["a", "b"])
    prune_global(w, mask, 0.5, [])
    for k in w:
        assert torch.equal(w[k], w_copy[k]) and torch.equal(mask[k], mask_copy[k])


# --------------------------------------------------------------------------- 2. vs torch.nn.utils.prune


def make_modules(seed: int) -> list[nn.Module]:
    torch.manual_seed(seed)
    return [nn.Linear(40, 25), nn.Conv2d(3, 6, 3), nn.Conv2d(6, 5, (2, 3)), nn.Linear(13, 10)]


@pytest.mark.parametrize("rate", [0.2, 0.1, 0.15, 0.5, 0.73])
@pytest.mark.parametrize("module_idx", [0, 1, 2, 3], ids=["linear", "conv3x3", "conv2x3", "out"])
def test_layerwise_matches_torch_l1_unstructured(rate, module_idx):
    mod = make_modules(seed=7)[module_idx]
    g = torch.Generator().manual_seed(11 + module_idx)
    w0 = mod.weight.detach().clone()
    assert_no_ties(w0)
    # level 1: same tensor, amount = the int count lth prunes
    mask = full_mask({"w": w0})
    k = prune_count(w0.numel(), rate)
    tprune.l1_unstructured(mod, "weight", amount=k)
    mask = prune_layerwise({"w": w0}, mask, {"w": rate})
    assert int((~mask["w"]).sum()) == k
    assert torch.equal(mod.weight_mask.bool(), mask["w"])
    # iterative levels: new "trained" scores each level; PyTorch's PruningContainer prunes
    # among the survivors of the existing mask
    for level in range(2, 8):
        scores = torch.randn(w0.shape, generator=g)
        assert_no_ties(scores)
        k = prune_count(int(mask["w"].sum()), rate)
        tprune.l1_unstructured(mod, "weight", amount=k, importance_scores=scores)
        mask = prune_layerwise({"w": scores}, mask, {"w": rate})
        assert torch.equal(mod.weight_mask.bool(), mask["w"]), f"level {level}"
    # and without importance_scores: PyTorch scores weight_orig, i.e. the original tensor
    k = prune_count(int(mask["w"].sum()), rate)
    tprune.l1_unstructured(mod, "weight", amount=k)
    mask = prune_layerwise({"w": w0}, mask, {"w": rate})
    assert torch.equal(mod.weight_mask.bool(), mask["w"])


@pytest.mark.parametrize("rate", [0.2, 0.35, 0.6])
def test_global_matches_torch_global_unstructured(rate):
    mods = make_modules(seed=5)
    names = [f"m{i}" for i in range(len(mods))]
    params = [(m, "weight") for m in mods]
    w = {n: m.weight.detach().clone() for n, m in zip(names, mods)}
    assert_no_ties(torch.cat([v.flatten() for v in w.values()]))
    mask = full_mask(w)
    g = torch.Generator().manual_seed(99)
    for level in range(1, 8):
        if level > 1:  # retrained weights: new scores among the survivors
            w = {n: torch.randn(v.shape, generator=g) for n, v in w.items()}
            assert_no_ties(torch.cat([v.flatten() for v in w.values()]))
        before = sum(counts(mask).values())
        k = before - keep_count_global(mask, rate, names)
        assert k == prune_count(before, rate)
        tprune.global_unstructured(
            params, pruning_method=tprune.L1Unstructured, amount=k,
            importance_scores={(m, "weight"): w[n] for n, m in zip(names, mods)},
        )
        mask = prune_global(w, mask, rate, names)
        assert sum(counts(mask).values()) == before - k
        for n, m in zip(names, mods):
            assert torch.equal(m.weight_mask.bool(), mask[n]), f"{n} level {level}"


# --------------------------------------------------------------------------- 3. exact counts, rates


def test_lenet_layer_rates_output_at_half_rate():
    model = lenet()
    cfg = get_preset("lenet300-mnist")
    assert "lenet300" in MODELS
    assert prunable_parameters(model) == list(LENET_SHAPES)
    assert output_parameter(model) == "out.weight"
    assert layer_rates(model, cfg) == {"hidden.0.weight": 0.2, "hidden.1.weight": 0.2, "out.weight": 0.1}
    assert global_pool(model, cfg) == list(LENET_SHAPES)
    params = dict(model.named_parameters())
    assert {n: tuple(params[n].shape) for n in LENET_SHAPES} == LENET_SHAPES


def test_conv_preset_layer_rates():
    model = build_model("conv2", (3, 8, 8), 10)
    rates = layer_rates(model, get_preset("conv2-cifar10"))
    assert rates == {"features.0.weight": 0.1, "features.2.weight": 0.1, "fc.2.weight": 0.2,
                     "fc.5.weight": 0.2, "out.weight": 0.1}


def test_lenet_exact_pruned_count_per_level_per_layer():
    model = lenet()
    cfg = get_preset("lenet300-mnist")
    rates = layer_rates(model, cfg)
    params = dict(model.named_parameters())
    mask = full_mask({n: params[n] for n in prunable_parameters(model)})
    # level 1 by hand: 235,200 * 0.2, 30,000 * 0.2, 1,000 * 0.1
    expected_first = {"hidden.0.weight": 47_040, "hidden.1.weight": 6_000, "out.weight": 100}
    for level in range(1, 7):
        w = rand_weights(LENET_SHAPES, seed=level)
        new = next_mask(model, cfg, w, mask, levels=1)
        for n in LENET_SHAPES:
            r = int(mask[n].sum())
            pruned = r - int(new[n].sum())
            assert pruned == prune_count(r, rates[n]) == ref_count(r, rates[n]), f"{n} level {level}"
            if level == 1:
                assert pruned == expected_first[n]
        # the same through prune_layerwise directly
        direct = prune_layerwise(w, mask, rates)
        assert all(torch.equal(direct[n], new[n]) for n in LENET_SHAPES)
        mask = new
    assert counts(mask)["out.weight"] == 531  # 1000 -> 900 -> 810 -> 729 -> 656 -> 590 -> 531


def test_layerwise_rate_zero_and_missing_layers_untouched_bit_for_bit():
    shapes = {"a": (20, 10), "b": (6, 3, 3, 3), "c": (4, 9)}
    g = torch.Generator().manual_seed(0)
    mask = {n: torch.rand(s, generator=g) < 0.7 for n, s in shapes.items()}  # non-trivial
    b0, c0 = mask["b"].clone(), mask["c"].clone()
    rates = {"a": 0.3, "b": 0.0}  # "c" missing
    for level in range(5):
        mask = prune_layerwise(rand_weights(shapes, 40 + level), mask, rates)
        assert torch.equal(mask["b"], b0) and torch.equal(mask["c"], c0)
        assert mask["b"].dtype == torch.bool and mask["c"].dtype == torch.bool
    assert keep_counts_layerwise(mask, rates, levels=3)["b"] == int(b0.sum())


def test_prune_output_false_leaves_output_dense_layerwise_and_global():
    model = lenet()
    params = dict(model.named_parameters())
    base = full_mask({n: params[n] for n in prunable_parameters(model)})
    # make the output layer's mask non-trivial to check it is copied bit for bit
    base["out.weight"] = torch.rand(10, 100, generator=torch.Generator().manual_seed(1)) < 0.5
    out0 = base["out.weight"].clone()
    for strategy in ("layerwise", "global"):
        cfg = lenet_cfg(strategy=strategy, prune_output=False)
        assert "out.weight" not in global_pool(model, cfg)
        assert layer_rates(model, cfg)["out.weight"] == 0.0
        mask = base
        for level in range(4):
            mask = next_mask(model, cfg, rand_weights(LENET_SHAPES, 70 + level), mask, levels=1)
            assert torch.equal(mask["out.weight"], out0), strategy
        assert counts(mask)["hidden.0.weight"] < 235_200


def test_global_excluded_layers_untouched_and_total_count_exact():
    shapes = {"a": (30, 20), "b": (8, 3, 3, 3), "c": (10, 30)}
    g = torch.Generator().manual_seed(2)
    mask = {n: torch.rand(s, generator=g) < 0.8 for n, s in shapes.items()}
    c0 = mask["c"].clone()
    names = ["a", "b"]
    for level in range(6):
        w = rand_weights(shapes, 200 + level)
        before = int(mask["a"].sum() + mask["b"].sum())
        new = prune_global(w, mask, 0.25, names)
        after = int(new["a"].sum() + new["b"].sum())
        assert before - after == prune_count(before, 0.25)
        assert torch.equal(new["c"], c0)
        assert new["c"] is not mask["c"]  # a copy, not an alias
        ref = np_prune_global([w[n].numpy() for n in names], [mask[n].numpy() for n in names],
                              prune_count(before, 0.25))
        for n, r in zip(names, ref):
            np.testing.assert_array_equal(new[n].numpy(), r)
        mask = new
    assert list(mask) == list(shapes)


def test_global_with_empty_pool_copies_mask():
    w = rand_weights({"a": (3, 3)}, 0)
    m = full_mask(w)
    m["a"][1, 1] = False
    out = prune_global(w, m, 0.5, [])
    assert torch.equal(out["a"], m["a"]) and out["a"] is not m["a"]


# --------------------------------------------------------------------------- 4. nesting


@pytest.mark.parametrize("strategy", ["layerwise", "global"])
def test_masks_nested_over_ten_levels_with_retrained_weights(strategy):
    shapes = {"a": (50, 40), "b": (16, 8, 3, 3), "c": (10, 50)}
    rates = {"a": 0.2, "b": 0.15, "c": 0.1}
    mask = full_mask({n: torch.empty(s) for n, s in shapes.items()})
    history = [mask]
    for level in range(10):
        w = rand_weights(shapes, 300 + level)
        if strategy == "layerwise":
            new = prune_layerwise(w, mask, rates)
        else:
            new = prune_global(w, mask, 0.2, ["a", "b", "c"])
        assert is_nested(new, mask)
        for n in shapes:
            assert not bool((new[n] & ~mask[n]).any()), f"{n} grew at level {level + 1}"
            assert torch.equal(new[n] & mask[n], new[n])
        assert sum(counts(new).values()) < sum(counts(mask).values())
        history.append(new)
        mask = new
    # nesting is transitive: the last mask is inside every earlier one, and not vice versa
    for earlier in history[:-1]:
        assert is_nested(mask, earlier)
        assert not is_nested(earlier, mask)


def test_is_nested_detects_violations():
    outer = {"a": torch.tensor([True, False, True]), "b": torch.tensor([[True, True]])}
    assert is_nested(outer, outer)
    assert is_nested({"a": torch.tensor([True, False, False]), "b": torch.tensor([[False, True]])}, outer)
    assert not is_nested({"a": torch.tensor([False, True, False]), "b": torch.tensor([[True, True]])}, outer)
    assert not is_nested(outer, {"a": outer["a"], "b": torch.tensor([[True, False]])})


# --------------------------------------------------------------------------- 5. the paper's P_m


PAPER_PM = {3: 51.28, 7: 21.07, 9: 13.52, 12: 6.95, 15: 3.58, 16: 2.87, 18: 1.85}


def test_paper_formula_printed_values():
    for n, pct in PAPER_PM.items():
        assert round(100 * paper_lenet_remaining(n), 2) == pct
        direct = (265_200 * 0.8**n + 1_000 * 0.9**n) / 266_200
        assert paper_lenet_remaining(n) == pytest.approx(direct, rel=1e-12)
    assert paper_lenet_remaining(0) == 1.0


@pytest.mark.parametrize("n", sorted(PAPER_PM))
def test_expected_weights_remaining_matches_paper(n):
    model = lenet()
    frac = expected_weights_remaining(get_preset("lenet300-mnist"), model, n)
    assert abs(100 * frac - 100 * paper_lenet_remaining(n)) <= 0.005
    assert round(100 * frac, 2) == PAPER_PM[n]


def test_running_prune_layerwise_matches_paper():
    model = lenet()
    rates = layer_rates(model, get_preset("lenet300-mnist"))
    mask = full_mask({n: torch.empty(s) for n, s in LENET_SHAPES.items()})
    total = sum(m.numel() for m in mask.values())
    assert total == 266_200
    seen = {}
    for level in range(1, max(PAPER_PM) + 1):
        mask = prune_layerwise(rand_weights(LENET_SHAPES, 500 + level), mask, rates)
        seen[level] = density(mask)
        assert sum(counts(mask).values()) / total == seen[level]
    for n, pct in PAPER_PM.items():
        assert abs(100 * seen[n] - 100 * paper_lenet_remaining(n)) <= 0.005, n
        assert round(100 * seen[n], 2) == pct, n
        assert seen[n] == expected_weights_remaining(get_preset("lenet300-mnist"), model, n)


# --------------------------------------------------------------------------- 6. one-shot sizes


@pytest.mark.parametrize("levels", [1, 2, 4, 7])
@pytest.mark.parametrize(
    "strategy, prune_output",
    [("layerwise", True), ("global", True), ("global", False)],
    ids=["layerwise", "global", "global-no-output"],
)
def test_one_shot_reaches_same_sizes_as_iterative(levels, strategy, prune_output):
    model = lenet()
    cfg = lenet_cfg(strategy=strategy, prune_output=prune_output)
    assert cfg.prune.strategy == strategy
    params = dict(model.named_parameters())
    dense = full_mask({n: params[n] for n in prunable_parameters(model)})
    trained = rand_weights(LENET_SHAPES, 900)
    one_shot = next_mask(model, cfg, trained, dense, levels=levels)

    # iterative with the same weights at every level: same masks, hence same per-layer counts
    it_same, it_new = dense, dense
    for lv in range(levels):
        it_same = next_mask(model, cfg, trained, it_same, levels=1)
        it_new = next_mask(model, cfg, rand_weights(LENET_SHAPES, 901 + lv), it_new, levels=1)
    assert counts(one_shot) == counts(it_same)
    for n in LENET_SHAPES:
        assert torch.equal(one_shot[n], it_same[n]), n

    # iterative with retrained weights: layer-wise sizes per layer; global the pool total
    if strategy == "layerwise":
        assert counts(one_shot) == counts(it_new)
    else:
        pool = global_pool(model, cfg)
        assert sum(counts(one_shot)[n] for n in pool) == sum(counts(it_new)[n] for n in pool)
        for n in set(LENET_SHAPES) - set(pool):
            assert counts(one_shot)[n] == counts(it_new)[n] == dense[n].numel()
    frac = sum(counts(one_shot).values()) / 266_200
    assert frac == pytest.approx(expected_weights_remaining(cfg, model, levels), abs=1e-15)


def test_keep_count_helpers_compose_over_levels():
    mask = {"a": torch.ones(1000, dtype=torch.bool), "b": torch.ones(37, dtype=torch.bool)}
    rates = {"a": 0.2, "b": 0.5}
    r = {"a": 1000, "b": 37}
    for lv in range(1, 8):
        for n in r:
            r[n] -= ref_count(r[n], rates[n])
        assert keep_counts_layerwise(mask, rates, levels=lv) == r
    tot = 1037
    for lv in range(1, 8):
        tot -= ref_count(tot, 0.3)
        assert keep_count_global(mask, 0.3, ["a", "b"], levels=lv) == tot
    assert keep_count_global(mask, 0.3, ["b"], levels=1) == 37 - ref_count(37, 0.3)
    assert keep_counts_layerwise(mask, rates, levels=0) == {"a": 1000, "b": 37}


# --------------------------------------------------------------------------- 7. random masks


def pruned_lenet_mask() -> dict[str, torch.Tensor]:
    rates = {"hidden.0.weight": 0.2, "hidden.1.weight": 0.2, "out.weight": 0.1}
    mask = full_mask({n: torch.empty(s) for n, s in LENET_SHAPES.items()})
    for lv in range(3):
        mask = prune_layerwise(rand_weights(LENET_SHAPES, 600 + lv), mask, rates)
    return mask


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_random_mask_like_keeps_counts_and_differs():
    mask = pruned_lenet_mask()
    r = random_mask_like(mask, gen(0))
    assert list(r) == list(mask)
    assert counts(r) == counts(mask)
    for n in mask:
        assert r[n].dtype == torch.bool and r[n].shape == mask[n].shape
        assert not torch.equal(r[n], mask[n]), n
    # a random mask is (almost surely) not nested in the magnitude mask
    assert not is_nested(r, mask)


def test_random_mask_like_deterministic_per_seed_and_seed_dependent():
    mask = pruned_lenet_mask()
    a, b, c = random_mask_like(mask, gen(123)), random_mask_like(mask, gen(123)), random_mask_like(mask, gen(124))
    for n in mask:
        assert torch.equal(a[n], b[n]), n
        assert not torch.equal(a[n], c[n]), n
    assert counts(c) == counts(mask)


def test_random_mask_like_independent_of_dict_order():
    mask = pruned_lenet_mask()
    rev = {n: mask[n] for n in reversed(list(mask))}
    a, b = random_mask_like(mask, gen(5)), random_mask_like(rev, gen(5))
    assert list(b) == list(rev)
    for n in mask:
        assert torch.equal(a[n], b[n])


def test_random_mask_like_edge_counts():
    mask = {"full": torch.ones(4, 5, dtype=torch.bool), "empty": torch.zeros(3, 3, dtype=torch.bool),
            "one": torch.zeros(2, 2, 2, 2, dtype=torch.bool)}
    mask["one"][1, 0, 1, 0] = True
    r = random_mask_like(mask, gen(0))
    assert bool(r["full"].all()) and not bool(r["empty"].any()) and int(r["one"].sum()) == 1


# --------------------------------------------------------------------------- 8. ties


def test_ties_lowest_flat_index_pruned_first():
    w = {"a": torch.ones(3, 4)}
    m1 = prune_layerwise(w, full_mask(w), {"a": 0.25})  # prune 3
    assert (~m1["a"]).flatten().nonzero().flatten().tolist() == [0, 1, 2]
    m2 = prune_layerwise(w, m1, {"a": 0.25})  # 9 left -> prune floor(2.25 + 0.5) = 2
    assert (~m2["a"]).flatten().nonzero().flatten().tolist() == [0, 1, 2, 3, 4]


def test_ties_sign_does_not_matter_and_partial_ties():
    w = {"a": torch.tensor([[1.0, -1.0], [1.0, -1.0]])}
    m = prune_layerwise(w, full_mask(w), {"a": 0.5})
    assert m["a"].tolist() == [[False, False], [True, True]]
    w = {"a": torch.tensor([3.0, 1.0, 2.0, -1.0, 1.0, 5.0])}
    m = prune_layerwise(w, full_mask(w), {"a": 0.4})  # prune floor(2.4 + 0.5) = 2 of the three 1s
    assert m["a"].tolist() == [True, False, True, False, True, True]
    w = {"a": torch.tensor([0.0, -0.0, 0.0, 2.0])}
    m = prune_layerwise(w, full_mask(w), {"a": 0.5})
    assert m["a"].tolist() == [False, False, True, True]


def test_ties_with_survivors_skip_pruned_positions():
    w = {"a": torch.full((8,), 2.0)}
    mask = {"a": torch.tensor([False, True, False, True, True, True, True, True])}
    m = prune_layerwise(w, mask, {"a": 0.5})  # 6 left, prune 3: positions 1, 3, 4
    assert m["a"].tolist() == [False, False, False, False, False, True, True, True]


@pytest.mark.parametrize("order", [["a", "b"], ["b", "a"]])
def test_global_ties_follow_names_order(order):
    w = {"a": torch.ones(2, 3), "b": -torch.ones(4)}  # 10 equal magnitudes
    m = prune_global(w, full_mask(w), 0.5, order)  # prune 5: the first 5 of the concatenation
    expected = torch.ones(10, dtype=torch.bool)
    expected[:5] = False
    got = torch.cat([m[n].flatten() for n in order])
    assert torch.equal(got, expected)
    assert list(m) == ["a", "b"]
    assert counts(m) == ({"a": 1, "b": 4} if order == ["a", "b"] else {"a": 5, "b": 0})


# --------------------------------------------------------------------------- 9. hypothesis


dims = st.sampled_from([1, 2, 3, 4, 5, 6, 0])
shapes_st = st.lists(dims, min_size=1, max_size=4).map(tuple)
rates_st = st.one_of(
    st.sampled_from([0.5, 0.25, 0.2, 0.1, 0.125, 0.75, 0.4]),
    st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True),
)


def int_weights(rng: np.random.Generator, shape: tuple[int, ...], mag: int) -> torch.Tensor:
    return torch.from_numpy(rng.integers(-mag, mag + 1, size=shape).astype(np.float32))


@st.composite
def layer_problem(draw):
    n_layers = draw(st.integers(1, 4))
    shapes = {f"l{i}": draw(shapes_st) for i in range(n_layers)}
    rates = {n: draw(st.one_of(st.just(0.0), rates_st)) for n in shapes}
    if draw(st.booleans()):
        rates.pop(next(iter(rates)))  # a layer missing from rates: untouched
    seed = draw(st.integers(0, 2**32 - 1))
    mag = draw(st.integers(0, 4))
    levels = draw(st.integers(1, 5))
    random_start = draw(st.booleans())
    return shapes, rates, seed, mag, levels, random_start


def start_mask(rng, shapes, random_start):
    if random_start:
        return {n: torch.from_numpy(rng.random(s) < 0.6) for n, s in shapes.items()}
    return {n: torch.ones(s, dtype=torch.bool) for n, s in shapes.items()}


@HYP
@given(layer_problem())
def test_property_layerwise(problem):
    shapes, rates, seed, mag, levels, random_start = problem
    rng = np.random.default_rng(seed)
    mask = start_mask(rng, shapes, random_start)
    initial = {n: m.clone() for n, m in mask.items()}
    for _ in range(levels):
        w = {n: int_weights(rng, s, mag) for n, s in shapes.items()}
        new = prune_layerwise(w, mask, rates)
        assert list(new) == list(shapes)
        assert is_nested(new, mask)
        for n, s in shapes.items():
            r = int(mask[n].sum())
            rate = rates.get(n, 0.0)
            assert new[n].shape == s and new[n].dtype == torch.bool
            assert r - int(new[n].sum()) == ref_count(r, rate)
            ref = np_prune(w[n].numpy(), mask[n].numpy(), ref_count(r, rate))
            np.testing.assert_array_equal(new[n].numpy(), ref)
            if rate == 0.0:
                assert torch.equal(new[n], initial[n])
        mask = new


@st.composite
def global_problem(draw):
    n_layers = draw(st.integers(1, 5))
    shapes = {f"l{i}": draw(shapes_st) for i in range(n_layers)}
    perm = draw(st.permutations(list(shapes)))
    names = perm[: draw(st.integers(0, n_layers))]
    rate = draw(rates_st)
    seed = draw(st.integers(0, 2**32 - 1))
    mag = draw(st.integers(0, 4))
    levels = draw(st.integers(1, 5))
    random_start = draw(st.booleans())
    return shapes, names, rate, seed, mag, levels, random_start


@HYP
@given(global_problem())
def test_property_global(problem):
    shapes, names, rate, seed, mag, levels, random_start = problem
    rng = np.random.default_rng(seed)
    mask = start_mask(rng, shapes, random_start)
    initial = {n: m.clone() for n, m in mask.items()}
    for lv in range(1, levels + 1):
        w = {n: int_weights(rng, s, mag) for n, s in shapes.items()}
        before = sum(int(mask[n].sum()) for n in names)
        k = ref_count(before, rate)
        assert keep_count_global(mask, rate, names) == before - k
        new = prune_global(w, mask, rate, names)
        assert list(new) == list(shapes)
        assert is_nested(new, mask)
        assert sum(int(new[n].sum()) for n in names) == before - k
        ref = np_prune_global([w[n].numpy() for n in names], [mask[n].numpy() for n in names], k)
        for n, r in zip(names, ref):
            np.testing.assert_array_equal(new[n].numpy(), r, err_msg=n)
        for n in shapes:
            assert new[n].shape == shapes[n] and new[n].dtype == torch.bool
            if n not in names:
                assert torch.equal(new[n], initial[n])
        # one-shot to the same total count is the same mask when the weights do not change
        if lv == 1:
            two = prune_global(w, new, rate, names)
            direct = prune_global_to_count(w, mask, names, keep_count_global(mask, rate, names, levels=2))
            for n in shapes:
                assert torch.equal(two[n], direct[n])
        mask = new


@HYP
@given(layer_problem())
def test_property_layerwise_one_shot_equals_iterative_with_fixed_weights(problem):
    shapes, rates, seed, mag, levels, random_start = problem
    rng = np.random.default_rng(seed)
    mask = start_mask(rng, shapes, random_start)
    w = {n: int_weights(rng, s, mag) for n, s in shapes.items()}
    it = mask
    for _ in range(levels):
        it = prune_layerwise(w, it, rates)
    one = prune_layerwise_to_counts(w, mask, keep_counts_layerwise(mask, rates, levels))
    for n in shapes:
        assert torch.equal(it[n], one[n])


# --------------------------------------------------------------------------- 10. density, stats


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
