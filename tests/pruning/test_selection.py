"""lth.pruning.selection: every mask is checked for exact equality against an independent reference.

The reference is a brute-force numpy implementation of the documented rule (tests/pruning/reference.py)
and, on tie-free continuous weights, PyTorch's own ``torch.nn.utils.prune``. Nothing here trains a
network or touches files.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune as tprune

from lth.pruning import (
    full_mask,
    is_nested,
    keep_count_global,
    keep_counts_layerwise,
    keep_largest,
    prune_count,
    prune_global,
    prune_global_to_count,
    prune_layerwise,
    prune_layerwise_to_counts,
    random_mask_like,
    select_global,
    select_layerwise,
)
from tests.pruning.reference import (
    LENET_SHAPES,
    assert_no_ties,
    counts,
    np_prune,
    np_prune_global,
    rand_weights,
    ref_count,
)

HYP = settings(max_examples=60, deadline=None, database=None)


# --------------------------------------------------------------------------- layer-wise vs numpy


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


# --------------------------------------------------------------------------- vs torch.nn.utils.prune


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


# --------------------------------------------------------------------------- untouched layers, exact counts


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


# --------------------------------------------------------------------------- nesting


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


# --------------------------------------------------------------------------- random masks


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


# --------------------------------------------------------------------------- ties


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


# --------------------------------------------------------------------------- hypothesis


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


# --------------------------------------------------------------------------- selection on scores


def test_keep_largest_by_hand_and_leaves_inputs_alone():
    scores = torch.tensor([0.3, 0.1, 0.3, 0.9, 0.0, 0.3])
    mask = torch.tensor([True, True, True, True, False, True])
    s0, m0 = scores.clone(), mask.clone()
    out = keep_largest(scores, mask, 3)  # drop 2 of 5 survivors: 0.1, then the first 0.3
    assert out.tolist() == [False, False, True, True, False, True]
    assert torch.equal(scores, s0) and torch.equal(mask, m0)
    assert torch.equal(keep_largest(scores, mask, 5), mask) and not keep_largest(scores, mask, 0).any()
    with pytest.raises(ValueError, match="cannot keep 6 of 5"):
        keep_largest(scores, mask, 6)


def test_select_on_scores_may_differ_from_magnitude():
    """Selection uses the scores given, not the weights' magnitudes (the hook for SNIP / SynFlow)."""
    w = {"a": torch.tensor([5.0, 4.0, 3.0, 2.0])}
    s = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    mask = full_mask(w)
    assert select_layerwise(s, mask, {"a": 2})["a"].tolist() == [False, False, True, True]
    assert prune_layerwise_to_counts(w, mask, {"a": 2})["a"].tolist() == [True, True, False, False]
    g = select_global({**s, "b": torch.tensor([9.0])}, {**mask, "b": torch.ones(1, dtype=torch.bool)}, ["b", "a"], 2)
    assert g["a"].tolist() == [False, False, False, True] and g["b"].tolist() == [True]


@pytest.mark.parametrize("seed", range(5))
def test_select_layerwise_matches_numpy_on_random_scores_and_masks(seed):
    rng = np.random.default_rng(seed)
    shapes = {"a": (7, 5), "b": (3, 2, 2, 2)}
    mask = {n: torch.from_numpy(rng.random(s) < 0.7) for n, s in shapes.items()}
    scores = {n: torch.from_numpy(rng.integers(-3, 4, size=s).astype(np.float32)) for n, s in shapes.items()}
    keep = {n: int(m.sum()) // 2 for n, m in mask.items()}
    out = select_layerwise(scores, mask, keep)
    for n in shapes:
        # np_prune ranks by |w|; give it non-negative scores so |s| = s
        shifted = (scores[n] + 10).numpy()
        ref = np_prune(shifted, mask[n].numpy(), int(mask[n].sum()) - keep[n])
        np.testing.assert_array_equal(out[n].numpy(), ref)
        assert torch.equal(select_layerwise({n: scores[n] + 10}, {n: mask[n]}, {n: keep[n]})[n], out[n])
