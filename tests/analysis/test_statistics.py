"""lth.analysis.statistics: every statistic against an independent computation (Python sets,
numpy, Monte Carlo) on masks and weights, and on a real run trained in the test."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lth.analysis.statistics import (
    EDGES,
    StatisticsWarning,
    init_split,
    jaccard,
    movement,
    random_jaccard,
    ticket_statistics,
)
from lth.cli import main
from lth.store import RunStore


def random_mask(shape, p, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) < p


def test_jaccard_matches_python_sets():
    a = {"x": random_mask((30, 20), 0.4, 1), "y": random_mask((50,), 0.7, 2)}
    b = {"x": random_mask((30, 20), 0.5, 3), "y": random_mask((50,), 0.2, 4)}

    def kept(m):
        return {(k, i) for k, v in m.items() for i, keep in enumerate(v.flatten().tolist()) if keep}
    sa, sb = kept(a), kept(b)
    assert jaccard(a, b) == pytest.approx(len(sa & sb) / len(sa | sb), abs=0)
    assert jaccard(a, a) == 1.0
    with pytest.raises(ValueError, match="different parameters"):
        jaccard(a, {"x": a["x"]})


def test_random_jaccard_agrees_with_monte_carlo():
    n, a, b = 2000, 700, 300
    rng = random.Random(0)
    items = range(n)
    draws = [len(set(rng.sample(items, a)) & set(rng.sample(items, b))) for _ in range(3000)]
    mc = float(np.mean([i / (a + b - i) for i in draws]))
    assert random_jaccard(n, a, b) == pytest.approx(mc, abs=1e-3)  # MC std error ~1e-4
    assert random_jaccard(n, n, n) == 1.0 and random_jaccard(n, 0, 5) == 0.0
    with pytest.raises(ValueError):
        random_jaccard(10, 11, 1)


def test_init_split_divides_by_the_layers_initial_std():
    w = torch.randn(40, 30, generator=torch.Generator().manual_seed(0))
    m = w.abs() > 0.5
    (surv, pruned), = init_split({"w": w}, {"w": m}).values()
    std = w.double().numpy().std(ddof=1)
    np.testing.assert_allclose(np.sort(surv.numpy()), np.sort(w.numpy()[m.numpy()] / std), rtol=1e-6)
    np.testing.assert_allclose(np.sort(pruned.numpy()), np.sort(w.numpy()[~m.numpy()] / std), rtol=1e-6)


def test_movement_counts_survivors_only():
    start, final = {"w": torch.tensor([1.0, -2.0, 3.0, 0.5])}, {"w": torch.tensor([2.0, -2.5, 0.0, 0.0])}
    mask = {"w": torch.tensor([True, True, False, True])}
    std = np.array([1.0, -2.0, 3.0, 0.5]).std(ddof=1)
    np.testing.assert_allclose(movement(start, final, mask, start).numpy(), np.array([1.0, 0.5, 0.5]) / std)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("stats")
    assert main(["run", "--preset", "digits-quick", "--trials", "2", "--levels", "2", "--iterations", "60",
                 "--eval-every", "30", "--branches", "ticket,reinit,random_mask", "--threads", "1",
                 "--out", str(out), "--quiet"]) == 0
    return next(out.glob("digits-quick-*"))


def test_sparsity_per_layer_is_the_saved_masks_counts(run):
    stats = ticket_statistics(run)
    store = RunStore(run)
    for r in stats.sparsity:
        if r.level == 0:
            assert r.kept == r.total
            continue
        m = store.load_level_mask(r.trial, r.level)[r.layer].numpy()
        assert (r.kept, r.total) == (int(m.sum()), m.size)
    assert {(r.trial, r.level) for r in stats.sparsity} == {(t, lv) for t in (0, 1) for lv in (0, 1, 2)}


def test_consecutive_imp_masks_are_nested_so_their_jaccard_is_the_kept_ratio(run):
    stats = ticket_statistics(run)
    store = RunStore(run)
    for o in stats.overlap:
        if o.level == 0:
            assert o.previous_level is None and o.trials_mean == 1.0
            continue
        assert o.nested is True
        ratios = []
        for t in (0, 1):
            now = sum(int(v.sum()) for v in store.load_level_mask(t, o.level).values())
            before = (sum(int(v.sum()) for v in store.load_level_mask(t, o.level - 1).values()) if o.level > 1
                      else sum(v.numel() for v in store.load_level_mask(t, o.level).values()))
            ratios.append(now / before)
        assert o.previous_level == pytest.approx(sum(ratios) / 2, abs=1e-12)


def test_initial_values_of_survivors_and_pruned_match_numpy(run):
    stats = ticket_statistics(run)
    store = RunStore(run)
    level = 2
    surv, pruned = [], []
    for t in (0, 1):
        theta0, mask = store.load_theta0(t), store.load_level_mask(t, level)
        for name, m in mask.items():
            w = theta0[name].double().numpy()
            std = w.std(ddof=1)
            surv.append(w[m.numpy()] / std)
            pruned.append(w[~m.numpy()] / std)
    s, p = np.concatenate(surv), np.concatenate(pruned)
    row = next(r for r in stats.init if r.level == level)
    assert (row.survivors, row.pruned) == (len(s), len(p))
    assert row.survivors_mean_abs == pytest.approx(np.abs(s).mean(), rel=1e-9)
    assert row.pruned_mean_abs == pytest.approx(np.abs(p).mean(), rel=1e-9)
    assert row.survivors_above_std == pytest.approx((np.abs(s) > 1).mean(), rel=1e-9)
    assert list(row.survivors_hist) == np.histogram(np.clip(s, EDGES[0], EDGES[-1]), bins=EDGES)[0].tolist()
    assert row.survivors_mean_abs > row.pruned_mean_abs  # magnitude pruning keeps the large ones


def test_movement_of_tickets_and_random_masks_matches_numpy(run):
    stats = ticket_statistics(run)
    store = RunStore(run)
    for branch in ("ticket", "random_mask"):
        row = next(r for r in stats.movement if r.level == 1 and r.branch == branch)
        deltas = []
        for t in (0, 1):
            theta0, final = store.load_theta0(t), store.load_final(t, 1, branch)
            mask = store.load_unit_mask(t, 1, branch) if branch == "random_mask" else store.load_level_mask(t, 1)
            for name, m in mask.items():
                std = theta0[name].double().numpy().std(ddof=1)
                d = np.abs(final[name].double().numpy() - theta0[name].double().numpy())[m.numpy()] / std
                deltas.append(d)
        d = np.concatenate(deltas)
        assert row.units == 2
        assert (row.mean, row.median, row.p90) == pytest.approx((d.mean(), np.median(d), np.percentile(d, 90)))
    assert not [r for r in stats.movement if r.branch == "reinit"]  # its start is not stored


def test_a_damaged_file_is_left_out_with_a_warning(run, tmp_path):
    import shutil

    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    (copy / "trial_1" / "level_2" / "mask.pt").write_bytes(b"garbage")
    with pytest.warns(StatisticsWarning, match="level 2 mask of trial 1"):
        stats = ticket_statistics(copy)
    assert (1, 2) not in {(r.trial, r.level) for r in stats.sparsity}
    assert any("level 2 mask of trial 1" in n for n in stats.notes)
