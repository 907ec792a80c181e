"""The training loop (lth.training.loop): what train / train_many record, resume, capture and
report; failures; the test_eval modes. Engine-specific kernels are in test_engines.py."""

from __future__ import annotations

import copy

import pytest
import torch

from lth.config import TrainConfig
from lth.models import build_model, initialize, prunable_tensors
from lth.pruning import apply_mask, full_mask, random_mask_like
from lth.training import TrainingDiverged, TrainState, UnitInput, train, train_many

from .units import (
    assert_pruned_weights_zero,
    assert_same_training,
    bernoulli_unit,
    equal_count_unit,
    mlp,
    state_of,
    states_of,
)


def _model(seed=0):
    m = mlp()
    initialize(m, torch.Generator().manual_seed(seed))
    return m


def _sparse_mask(model, seed=0, keep=0.3):
    dense = full_mask(prunable_tensors(model))
    g = torch.Generator().manual_seed(seed)
    return {n: (torch.rand(m.shape, generator=g) < keep) for n, m in dense.items()}


# ---------------------------------------------------------------------------------------- one unit


@pytest.mark.parametrize("engine", ["mlp", "vmap", "module"])
@pytest.mark.parametrize("optimizer, wd", [("adam", 0.0), ("adam", 1e-3), ("sgd", 1e-4)])
def test_pruned_weights_stay_exactly_zero_through_training(digits, optimizer, wd, engine):
    model = _model()
    mask = _sparse_mask(model)
    apply_mask(model, mask)
    cfg = TrainConfig(iterations=300, batch_size=32, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 1e-3,
                      weight_decay=wd, eval_every=100)
    res = train(model, mask, digits, cfg, data_seed=1, engine=engine)
    for n, m in mask.items():
        w = res.final_state[n]
        assert torch.count_nonzero(w[~m]) == 0, n
        # the survivors did train
        assert torch.count_nonzero(w[m]) == int(m.sum()), n


@pytest.mark.parametrize("engine", [None, "module"])
def test_train_leaves_the_trained_weights_in_the_model(digits, engine):
    model = _model()
    start = state_of(model)
    res = train(model, full_mask({}), digits, TrainConfig(iterations=50, batch_size=32, eval_every=50),
                data_seed=0, engine=engine)
    after = model.state_dict()
    assert any(not torch.equal(after[k], start[k]) for k in start)
    for k in res.final_state:
        assert torch.equal(after[k], res.final_state[k]), k


@pytest.mark.parametrize("engine", [None, "module"])
def test_resume_from_a_checkpoint_equals_uninterrupted_run(digits, engine):
    cfg = TrainConfig(iterations=250, batch_size=32, eval_every=50)
    mask = _sparse_mask(_model())

    def fresh():
        m = _model()
        apply_mask(m, mask)
        return m

    full = train(fresh(), mask, digits, cfg, data_seed=7, engine=engine)

    saved: list[TrainState] = []

    class Stop(Exception):
        pass

    def on_ckpt(state: TrainState) -> None:
        saved.append(TrainState(state.step, {k: v.clone() for k, v in state.model.items()},
                                state.optimizer, list(state.history), state.rng, state.elapsed,
                                state.running_loss, state.since_eval))
        if state.step == 120:
            raise Stop

    # 120 is not an evaluation point: the running training loss must be carried too.
    with pytest.raises(Stop):
        train(fresh(), mask, digits, cfg, data_seed=7, checkpoint_every=40, on_checkpoint=on_ckpt, engine=engine)
    resumed = train(fresh(), mask, digits, cfg, data_seed=7, resume=copy.deepcopy(saved[-1]), engine=engine)
    assert [h.to_dict() for h in resumed.history] == [h.to_dict() for h in full.history]
    for k in full.final_state:
        assert torch.equal(full.final_state[k], resumed.final_state[k]), k


def test_evaluations_every_eval_every_including_first_and_last(digits):
    cfg = TrainConfig(iterations=230, batch_size=32, eval_every=50)
    res = train(_model(), full_mask({}), digits, cfg, data_seed=0)
    assert [h.iteration for h in res.history] == [0, 50, 100, 150, 200, 230]


def test_early_stop_is_the_minimum_validation_loss(digits):
    cfg = TrainConfig(iterations=400, batch_size=32, eval_every=20)
    res = train(_model(), full_mask({}), digits, cfg, data_seed=0)
    best = min(res.history, key=lambda h: h.val_loss)
    assert res.early_stop.iteration == best.iteration
    assert res.early_stop.test_accuracy == best.test_accuracy


def test_same_seed_same_numbers_different_data_seed_different_numbers(digits):
    cfg = TrainConfig(iterations=100, batch_size=32, eval_every=50)
    a = train(_model(), full_mask({}), digits, cfg, data_seed=0)
    b = train(_model(), full_mask({}), digits, cfg, data_seed=0)
    c = train(_model(), full_mask({}), digits, cfg, data_seed=1)
    assert [h.to_dict() for h in a.history] == [h.to_dict() for h in b.history]
    assert a.history[-1].val_loss != c.history[-1].val_loss


def test_batch_larger_than_training_set_is_a_clear_error(digits):
    cfg = TrainConfig(iterations=10, batch_size=100_000)
    with pytest.raises(ValueError, match="batch_size"):
        train(_model(), full_mask({}), digits, cfg, data_seed=0)


def test_random_mask_training_keeps_its_own_zeros(digits):
    model = _model()
    mask = random_mask_like(_sparse_mask(model, keep=0.1), torch.Generator().manual_seed(3))
    apply_mask(model, mask)
    res = train(model, mask, digits, TrainConfig(iterations=100, batch_size=32, eval_every=50), data_seed=0)
    assert_pruned_weights_zero(res.final_state, mask)


@pytest.mark.parametrize("engine", [None, "module"])
def test_a_single_diverging_unit_raises_training_diverged(digits, engine):
    model = _model()
    with torch.no_grad():
        model.hidden[0].weight[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        train(model, full_mask({}), digits, TrainConfig(iterations=20, batch_size=32, eval_every=10),
              data_seed=0, engine=engine)


# ---------------------------------------------------------------------------------------- N units


def test_units_are_independent_one_diverging_does_not_touch_the_others(digits):
    cfg = TrainConfig(iterations=100, batch_size=32, eval_every=50)
    m0, k0 = bernoulli_unit(0, 0.5)
    m1, k1 = bernoulli_unit(1, 0.5)
    s1 = state_of(m1)
    bad = state_of(m0)
    bad["hidden.0.weight"][0, 0] = float("nan")
    out = train_many(mlp(), [UnitInput(bad, k0, 0), UnitInput(s1, k1, 1)], digits, cfg)
    assert isinstance(out[0], TrainingDiverged)
    alone = train(m1, k1, digits, cfg, data_seed=1, engine="module")
    assert out[1].history[-1].val_loss == pytest.approx(alone.history[-1].val_loss, rel=1e-4)


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_batched_checkpoints_resume_batched_and_one_at_a_time(digits, keep):
    """A checkpoint written by train_many continues in train_many or in train() on the module
    engine with the same result, and the module engine's checkpoint continues in train_many."""
    cfg = TrainConfig(iterations=150, batch_size=32, lr=2e-3, eval_every=25)
    made = [equal_count_unit(s, keep) for s in range(2)]
    states = states_of(made)
    inputs = [UnitInput(st, k, i) for i, (st, (_, k)) in enumerate(zip(states, made))]
    template = mlp()
    reference = train_many(template, inputs, digits, cfg)
    saved: dict[int, list[TrainState]] = {0: [], 1: []}
    train_many(template, inputs, digits, cfg, checkpoint_every=60,
               on_checkpoint=lambda states: [saved[i].append(st) for i, st in states.items()])
    assert [s.step for s in saved[0]] == [60, 120]
    resumed = train_many(template, [UnitInput(st, k, i, resume=saved[i][0])
                                    for i, (st, (_, k)) in enumerate(zip(states, made))], digits, cfg)
    for a, b in zip(reference, resumed):
        assert_same_training(a, b, rtol=1e-6, atol=1e-7)
    for i, (_, k) in enumerate(made):  # the same checkpoint resumes one-at-a-time
        single = train(mlp(), k, digits, cfg, data_seed=i, resume=saved[i][1], engine="module")
        assert_same_training(reference[i], single)
    # and a one-at-a-time checkpoint resumes batched
    singles: dict[int, TrainState] = {}
    for i, (_, k) in enumerate(made):
        fresh, _ = equal_count_unit(i, keep)
        train(fresh, k, digits, cfg, data_seed=i, checkpoint_every=90, engine="module",
              on_checkpoint=lambda st, i=i: singles.setdefault(i, copy.deepcopy(st)))
    back = train_many(template, [UnitInput(st, k, i, resume=singles[i])
                                 for i, (st, (_, k)) in enumerate(zip(states, made))], digits, cfg)
    for a, b in zip(reference, back):
        assert_same_training(a, b)


def test_units_resuming_from_different_iterations_are_refused(digits):
    cfg = TrainConfig(iterations=40, batch_size=32, eval_every=20)
    m, k = equal_count_unit(0, 0.5)
    st = state_of(m)
    got: list[TrainState] = []
    train_many(mlp(), [UnitInput(st, k, 0)], digits, cfg,
               checkpoint_every=20, on_checkpoint=lambda states: got.append(states[0]))
    with pytest.raises(ValueError, match="different iterations"):
        train_many(mlp(), [UnitInput(st, k, 0, resume=got[0]), UnitInput(st, k, 1)], digits, cfg)


def test_capture_hands_each_unit_its_weights_at_the_rewind_iteration(digits):
    cfg = TrainConfig(iterations=30, batch_size=32, eval_every=10)
    made = [equal_count_unit(s, 0.5) for s in range(2)]
    states = states_of(made)
    got: dict[int, dict] = {}
    train_many(mlp(), [UnitInput(st, k, i) for i, (st, (_, k)) in enumerate(zip(states, made))], digits, cfg,
               capture_steps=frozenset({7}), on_capture=lambda i, step, s: got.setdefault(i, s))
    short = TrainConfig(iterations=7, batch_size=32, eval_every=10)
    for i, (m, k) in enumerate(made):
        ref = train(m, k, digits, short, data_seed=i, engine="module").final_state
        for name in ref:
            torch.testing.assert_close(got[i][name], ref[name], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------- test_eval


def reference_tested(history: list) -> list[int]:
    """Independently: the iterations that could be the early stop of some prefix of the history
    (the first minimum of val_loss over history[:j+1], for every j), plus the last iteration."""
    its = set()
    for j in range(len(history)):
        prefix = history[: j + 1]
        its.add(min(prefix, key=lambda e: (e.val_loss, e.iteration)).iteration)
    its.add(history[-1].iteration)
    return sorted(its)


def same_test_values(got, want, n_test, exact):
    """The same test loss up to float32 rounding and the same accuracy up to one image: with a
    group, ``best`` evaluates the chosen units alone, in a product of another width, whose sums
    BLAS may order differently (last-bit differences on one CPU, none on the AVX-512 EPYC)."""
    if exact:  # one unit: the same product in both modes
        assert got == want
        return
    (loss, acc), (ref_loss, ref_acc) = got, want
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert abs(acc - ref_acc) <= 1 / n_test + 1e-12


def assert_same_reports(every, best, n_test, exact):
    """Same validation curve, test values exactly at the reference points, the same test values
    there as ``every`` (bitwise when ``exact``), and the same early stop."""
    assert [(h.iteration, h.val_loss, h.val_accuracy) for h in every.history] == \
        [(h.iteration, h.val_loss, h.val_accuracy) for h in best.history]
    tested = [h.iteration for h in best.history if h.test_accuracy is not None]
    assert tested == reference_tested(every.history)
    assert len(tested) < len(best.history)  # something was really skipped
    by_it = {h.iteration: h for h in every.history}
    for h in best.history:
        if h.test_accuracy is not None:
            same_test_values((h.test_loss, h.test_accuracy),
                             (by_it[h.iteration].test_loss, by_it[h.iteration].test_accuracy), n_test, exact)
        else:
            assert h.test_loss is None
    assert best.early_stop.iteration == every.early_stop.iteration
    for b, e in ((best.early_stop, every.early_stop), (best.history[-1], every.history[-1])):
        same_test_values((b.test_loss, b.test_accuracy), (e.test_loss, e.test_accuracy), n_test, exact)


def test_single_unit_best_reports_the_same_numbers_and_skips_the_rest(digits):
    cfg = TrainConfig(iterations=1200, batch_size=32, lr=3e-3, eval_every=50)
    m, mask = equal_count_unit(0, 0.5)
    start = state_of(m)
    every = train(m, mask, digits, cfg, data_seed=3)
    m.load_state_dict(start)
    best = train(m, mask, digits, cfg, data_seed=3, test_eval="best")
    assert_same_reports(every, best, len(digits.test_y), exact=True)


def test_single_unit_best_resumes_with_the_minimum_so_far(digits):
    """The running minimum comes back from the checkpoint's history: a resumed run tests the same
    points as an uninterrupted one."""
    cfg = TrainConfig(iterations=600, batch_size=32, lr=3e-3, eval_every=25)
    m, mask = equal_count_unit(1, 0.5)
    start = state_of(m)
    whole = train(m, mask, digits, cfg, data_seed=4, test_eval="best")
    saved: list[TrainState] = []
    m.load_state_dict(start)
    train(m, mask, digits, TrainConfig(**{**cfg.__dict__, "iterations": 300}), data_seed=4,
          test_eval="best", checkpoint_every=200,
          on_checkpoint=lambda st: saved.append(copy.deepcopy(st)))  # what the store writes to disk
    assert saved and saved[-1].step == 200
    m2, _ = equal_count_unit(1, 0.5)
    resumed = train(m2, mask, digits, cfg, data_seed=4, test_eval="best", resume=saved[-1])
    assert [h.to_dict() for h in resumed.history] == [h.to_dict() for h in whole.history]


@pytest.mark.parametrize("keep", [1.0, 0.1])  # dense layers, and compact ones
def test_batched_best_tests_each_unit_at_its_own_minima(digits, keep):
    cfg = TrainConfig(iterations=1200, batch_size=32, lr=3e-3, eval_every=50)
    made = [equal_count_unit(s, keep) for s in range(4)]
    inputs = [UnitInput(state_of(m), k, 20 + i) for i, (m, k) in enumerate(made)]
    template = mlp()
    every = train_many(template, inputs, digits, cfg)
    best = train_many(template, inputs, digits, cfg, test_eval="best")
    for e, b in zip(every, best):
        assert_same_reports(e, b, len(digits.test_y), exact=False)
    # units reach their minima at different points, so evaluation really was per unit
    patterns = {tuple(h.test_accuracy is None for h in b.history) for b in best}
    assert len(patterns) > 1


def test_batched_best_resumes_with_each_units_minimum_so_far(digits):
    cfg = TrainConfig(iterations=600, batch_size=32, lr=3e-3, eval_every=25)
    made = [equal_count_unit(s, 0.5) for s in range(3)]
    inputs = [UnitInput(state_of(m), k, 30 + i) for i, (m, k) in enumerate(made)]
    template = mlp()
    whole = train_many(template, inputs, digits, cfg, test_eval="best")
    saved: dict[int, TrainState] = {}
    train_many(template, inputs, digits, TrainConfig(**{**cfg.__dict__, "iterations": 300}),
               test_eval="best", checkpoint_every=200,
               on_checkpoint=lambda states: saved.update(copy.deepcopy(states)))
    assert {st.step for st in saved.values()} == {200}
    resumed = train_many(template, [UnitInput(u.state, u.mask, u.data_seed, resume=saved[i])
                                    for i, u in enumerate(inputs)], digits, cfg, test_eval="best")
    for a, b in zip(whole, resumed):
        assert [h.iteration for h in a.history if h.test_accuracy is None] == \
            [h.iteration for h in b.history if h.test_accuracy is None]
        for ha, hb in zip(a.history, b.history):
            assert hb.val_loss == pytest.approx(ha.val_loss, rel=1e-6, abs=1e-7)


def test_an_unknown_test_eval_mode_is_refused_before_any_work(digits):
    with pytest.raises(ValueError, match="every or best"):
        train_many(build_model("mlp-100-50", (1, 8, 8), 10), [], digits, TrainConfig(), test_eval="sometimes")
