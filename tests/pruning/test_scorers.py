"""lth.pruning.scorers: the registry, and every scorer's contract with selection."""

from __future__ import annotations

import pytest
import torch

from lth.pruning import (
    SCORERS,
    full_mask,
    get_scorer,
    keep_counts_layerwise,
    prune_global_to_count,
    prune_layerwise,
    prune_layerwise_to_counts,
    register_scorer,
    score,
    scorer_names,
    select_global,
    select_layerwise,
)
from tests.pruning.reference import rand_weights

SHAPES = {"fc": (12, 7), "conv": (4, 3, 3, 3), "out": (5, 12)}


def test_magnitude_is_registered():
    assert "magnitude" in SCORERS and scorer_names() == sorted(SCORERS)


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_scorer_gives_one_score_per_weight_and_leaves_weights_alone(name):
    w = rand_weights(SHAPES, 0)
    w0 = {n: t.clone() for n, t in w.items()}
    s = get_scorer(name)(w)
    assert list(s) == list(SHAPES)
    for n in SHAPES:
        assert s[n].shape == w[n].shape and torch.isfinite(s[n]).all()
        assert torch.equal(w[n], w0[n])


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_prune_functions_select_on_the_named_scorers_scores(name):
    w = rand_weights(SHAPES, 1)
    mask = full_mask(w)
    s = score(name, w)
    keep = keep_counts_layerwise(mask, {n: 0.3 for n in SHAPES})
    by_scores = select_layerwise(s, mask, keep)
    by_name = prune_layerwise(w, mask, {n: 0.3 for n in SHAPES}, scorer=name)
    assert all(torch.equal(by_scores[n], by_name[n]) for n in SHAPES)
    assert all(torch.equal(by_scores[n], prune_layerwise_to_counts(w, mask, keep, scorer=name)[n]) for n in SHAPES)
    g_scores = select_global(s, mask, ["out", "fc"], 100)
    g_name = prune_global_to_count(w, mask, ["out", "fc"], 100, scorer=name)
    assert all(torch.equal(g_scores[n], g_name[n]) for n in SHAPES)
    assert torch.equal(g_name["conv"], mask["conv"])
    # the survivors are the highest scores: no pruned score exceeds a kept one, per layer / pooled
    for n in SHAPES:
        assert s[n][~by_name[n]].max() <= s[n][by_name[n]].min()
    pooled = torch.cat([s[n].flatten() for n in ("out", "fc")])
    kept = torch.cat([g_name[n].flatten() for n in ("out", "fc")])
    assert int(kept.sum()) == 100 and pooled[~kept].max() <= pooled[kept].min()


def test_magnitude_is_absolute_value_and_detached():
    w = torch.tensor([[-2.0, 0.5], [0.0, -0.25]], requires_grad=True)
    s = score("magnitude", {"a": w})["a"]
    assert torch.equal(s, torch.tensor([[2.0, 0.5], [0.0, 0.25]])) and not s.requires_grad


def test_unknown_scorer_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown scorer 'snip'; valid scorers: .*magnitude"):
        get_scorer("snip")
    with pytest.raises(ValueError, match="snip"):
        prune_layerwise({"a": torch.ones(3)}, {"a": torch.ones(3, dtype=torch.bool)}, {"a": 0.5}, scorer="snip")


def test_registering_a_scorer_changes_what_is_pruned_and_twice_is_refused():
    @register_scorer("test-inverse")
    def inverse(weights, *, model=None, batch=None):
        return {n: -w.detach().abs() for n, w in weights.items()}

    try:
        w = {"a": torch.tensor([3.0, -1.0, 2.0, 0.5])}
        mask = {"a": torch.ones(4, dtype=torch.bool)}
        assert prune_layerwise(w, mask, {"a": 0.5})["a"].tolist() == [True, False, True, False]
        assert prune_layerwise(w, mask, {"a": 0.5}, scorer="test-inverse")["a"].tolist() == [False, True, False, True]
        with pytest.raises(RuntimeError, match="twice"):
            register_scorer("test-inverse")(inverse)
    finally:
        del SCORERS["test-inverse"]


def test_a_scorer_with_wrong_shapes_is_caught():
    @register_scorer("test-bad-shape")
    def bad(weights, *, model=None, batch=None):
        return {n: w.detach().flatten() for n, w in weights.items()}

    try:
        with pytest.raises(ValueError, match=r"'test-bad-shape'.*\['a'\]"):
            score("test-bad-shape", {"a": torch.ones(2, 2)})
    finally:
        del SCORERS["test-bad-shape"]
