"""``test_eval="best"``: the test split is evaluated only at new validation-loss minima and at the
last iteration, and every number a unit reports is the same as with ``"every"``. And
``flush_denormals``, the other runtime switch that trades nothing reported for speed."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from lth.batched import UnitInput, train_many
from lth.config import ConfigError, ExperimentConfig, RuntimeConfig, config_hash
from lth.data import load_splits
from lth.lottery import Lottery
from lth.models import build_model, initialize, prunable_parameters
from lth.presets import get_preset
from lth.pruning import random_mask_like
from lth.stacked import MLPEngine, VmapEngine, make_engine
from lth.store import RunStore
from lth.train import TrainState, apply_mask_, needs_test, train
from lth.config import TrainConfig


def unit(seed: int, keep: float, name: str = "mlp-100-50"):
    m = build_model(name, (1, 8, 8), 10)
    initialize(m, torch.Generator().manual_seed(seed))
    params = dict(m.named_parameters())
    base = {}
    for n in prunable_parameters(m):  # exactly round(keep * size) weights per layer, as IMP keeps
        b = torch.zeros(params[n].numel(), dtype=torch.bool)
        b[: max(1, round(keep * b.numel()))] = True
        base[n] = b.view(params[n].shape)
    mask = random_mask_like(base, torch.Generator().manual_seed(seed + 7))
    apply_mask_(m, mask)
    return m, mask


def state_of(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def reference_tested(history: list) -> list[int]:
    """Independently: the iterations that could be the early stop of some prefix of the history
    (the first minimum of val_loss over history[:j+1], for every j), plus the last iteration."""
    its = set()
    for j in range(len(history)):
        prefix = history[: j + 1]
        its.add(min(prefix, key=lambda e: (e.val_loss, e.iteration)).iteration)
    its.add(history[-1].iteration)
    return sorted(its)


def assert_same_reports(every, best):
    """Same validation curve, the same test values wherever best measured them, test values exactly
    at the reference points, and the same early stop and final test accuracy."""
    assert [(h.iteration, h.val_loss, h.val_accuracy) for h in every.history] == \
        [(h.iteration, h.val_loss, h.val_accuracy) for h in best.history]
    tested = [h.iteration for h in best.history if h.test_accuracy is not None]
    assert tested == reference_tested(every.history)
    assert len(tested) < len(best.history)  # something was really skipped
    by_it = {h.iteration: h for h in every.history}
    for h in best.history:
        if h.test_accuracy is not None:
            assert (h.test_loss, h.test_accuracy) == (by_it[h.iteration].test_loss,
                                                      by_it[h.iteration].test_accuracy)
        else:
            assert h.test_loss is None
    assert best.early_stop.iteration == every.early_stop.iteration
    assert best.early_stop.test_accuracy == every.early_stop.test_accuracy
    assert best.history[-1].test_accuracy == every.history[-1].test_accuracy


def test_needs_test_is_true_exactly_at_new_minima_and_the_last_iteration():
    assert needs_test("every", 50, 100, 9.0, 1.0)
    assert needs_test("best", 0, 100, 2.0, math.inf)  # the first point is always a new minimum
    assert needs_test("best", 50, 100, 0.9, 1.0)
    assert not needs_test("best", 50, 100, 1.0, 1.0)  # a tie is not the first minimum
    assert not needs_test("best", 50, 100, 1.1, 1.0)
    assert needs_test("best", 100, 100, 1.1, 1.0)  # the final test accuracy
    with pytest.raises(ValueError, match="every or best"):
        needs_test("sometimes", 0, 100, 1.0, 1.0)


def test_single_unit_best_reports_the_same_numbers_and_skips_the_rest(digits):
    cfg = TrainConfig(iterations=1200, batch_size=32, lr=3e-3, eval_every=50)
    m, mask = unit(0, 0.5)
    start = state_of(m)
    every = train(m, mask, digits, cfg, data_seed=3)
    m.load_state_dict(start)
    best = train(m, mask, digits, cfg, data_seed=3, test_eval="best")
    assert_same_reports(every, best)


def test_single_unit_best_resumes_with_the_minimum_so_far(digits):
    """The running minimum comes back from the checkpoint's history: a resumed run tests the same
    points as an uninterrupted one."""
    cfg = TrainConfig(iterations=600, batch_size=32, lr=3e-3, eval_every=25)
    m, mask = unit(1, 0.5)
    start = state_of(m)
    whole = train(m, mask, digits, cfg, data_seed=4, test_eval="best")
    saved: list[TrainState] = []
    m.load_state_dict(start)
    train(m, mask, digits, TrainConfig(**{**cfg.__dict__, "iterations": 300}), data_seed=4,
          test_eval="best", checkpoint_every=200,
          on_checkpoint=lambda st: saved.append(copy.deepcopy(st)))  # what the store writes to disk
    assert saved and saved[-1].step == 200
    m2, _ = unit(1, 0.5)
    resumed = train(m2, mask, digits, cfg, data_seed=4, test_eval="best", resume=saved[-1])
    assert [h.to_dict() for h in resumed.history] == [h.to_dict() for h in whole.history]


@pytest.mark.parametrize("keep", [1.0, 0.1])  # dense layers, and compact ones
def test_batched_best_tests_each_unit_at_its_own_minima(digits, keep):
    cfg = TrainConfig(iterations=1200, batch_size=32, lr=3e-3, eval_every=50)
    made = [unit(s, keep) for s in range(4)]
    inputs = [UnitInput(state_of(m), k, 20 + i) for i, (m, k) in enumerate(made)]
    template = build_model("mlp-100-50", (1, 8, 8), 10)
    every = train_many(template, inputs, digits, cfg)
    best = train_many(template, inputs, digits, cfg, test_eval="best")
    for e, b in zip(every, best):
        assert_same_reports(e, b)
    # units reach their minima at different points, so evaluation really was per unit
    patterns = {tuple(h.test_accuracy is None for h in b.history) for b in best}
    assert len(patterns) > 1


def test_batched_best_resumes_with_each_units_minimum_so_far(digits):
    cfg = TrainConfig(iterations=600, batch_size=32, lr=3e-3, eval_every=25)
    made = [unit(s, 0.5) for s in range(3)]
    inputs = [UnitInput(state_of(m), k, 30 + i) for i, (m, k) in enumerate(made)]
    template = build_model("mlp-100-50", (1, 8, 8), 10)
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


def test_engine_logits_of_chosen_units_equal_their_rows_of_all_units(digits):
    x = digits.test_x[:200]
    for name, keep, kind in (("mlp-100-50", 0.5, MLPEngine), ("mlp-100-50", 0.05, MLPEngine),
                             ("conv2", 0.5, VmapEngine)):
        made = [unit(s, keep, name) for s in range(4)]
        engine = make_engine(build_model(name, (1, 8, 8), 10), [state_of(m) for m, _ in made],
                             [k for _, k in made], "cpu")
        assert isinstance(engine, kind)
        full = engine.logits(x)
        for pick in ([2], [3, 0], [0, 1, 2, 3]):
            torch.testing.assert_close(engine.logits(x, units=pick), full[pick], rtol=0, atol=0)
        with pytest.raises(ValueError, match="unit indices"):
            engine.logits(x, units=[4])


def lottery_cfg(test_eval: str) -> ExperimentConfig:
    d = get_preset("digits-quick").to_dict()
    d["train"].update(iterations=400, eval_every=20)
    d["lottery"].update(levels=2, trials=2, branches=("ticket", "reinit", "random_mask"))
    d["runtime"].update(test_eval=test_eval)
    return ExperimentConfig.from_dict(d)


def test_lottery_results_are_identical_with_best_and_every(tmp_path, digits):
    out = {}
    lines = []
    for mode in ("every", "best"):
        cfg = lottery_cfg(mode)
        with RunStore.open(cfg, root=tmp_path / mode) as store:
            out[mode] = Lottery(cfg, store, digits, log=lines.append).run()
            path = store.path
    assert config_hash(lottery_cfg("best")) == config_hash(lottery_cfg("every"))
    drop = {"train_seconds"}
    strip = lambda rs: [{k: v for k, v in r.items() if k not in drop} for r in rs]  # noqa: E731
    assert strip(out["best"]) == strip(out["every"])
    tested = untested = 0
    for f in path.glob("trial_*/level_*/*/metrics.jsonl"):
        for line in f.read_text().splitlines():
            h = json.loads(line)
            tested += h["test_accuracy"] is not None
            untested += h["test_accuracy"] is None
    assert tested and untested  # the best run's histories record the skipped points as null
    assert any("done: early stop" in s for s in lines)


def test_test_eval_is_validated_with_the_fix_in_the_message():
    with pytest.raises(ConfigError, match="runtime.test_eval = 'sometimes'.*every, best"):
        RuntimeConfig(test_eval="sometimes")


def denormal_survives() -> bool:
    return (torch.tensor([1e-37]) / 1000).item() != 0.0  # 1e-40 is denormal


@pytest.mark.parametrize("batched", [False, True])
def test_flush_denormals_is_on_while_training_and_off_after(digits, batched):
    cfg = TrainConfig(iterations=100, batch_size=32, lr=3e-3, eval_every=50)
    m, mask = unit(2, 0.5)
    seen: list[bool] = []
    assert denormal_survives()
    if batched:
        train_many(build_model("mlp-100-50", (1, 8, 8), 10), [UnitInput(state_of(m), mask, 1)], digits, cfg,
                   flush_denormals=True, on_eval=lambda i, p: seen.append(denormal_survives()))
    else:
        train(m, mask, digits, cfg, data_seed=1, flush_denormals=True,
              on_eval=lambda p: seen.append(denormal_survives()))
    assert seen == [False, False, False]  # flushed at every evaluation point (0, 50, 100)
    assert denormal_survives()  # and the process is back to IEEE behaviour


def test_flush_denormals_is_restored_when_training_fails(digits):
    cfg = TrainConfig(iterations=100, batch_size=32, eval_every=50)
    m, mask = unit(3, 0.5)

    def boom(p):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(m, mask, digits, cfg, data_seed=1, flush_denormals=True, on_eval=boom)
    assert denormal_survives()


def test_flush_denormals_leaves_a_short_runs_numbers_unchanged(digits):
    """Flushing touches only values below 1.2e-38, which vanish beside anything of normal size: a
    short run reports identical numbers. (Over 50K iterations a rare last-bit difference can
    survive and grow: the LeNet figure rerun matched bitwise in 137 of 245 units.)"""
    cfg = TrainConfig(iterations=1500, batch_size=32, lr=3e-3, eval_every=100)
    made = [unit(s, 0.5) for s in range(3)]
    inputs = [UnitInput(state_of(m), k, 40 + i) for i, (m, k) in enumerate(made)]
    template = build_model("mlp-100-50", (1, 8, 8), 10)
    plain = train_many(template, inputs, digits, cfg)
    flushed = train_many(template, inputs, digits, cfg, flush_denormals=True)
    for a, b in zip(plain, flushed):
        assert [(h.iteration, h.val_loss, h.test_accuracy) for h in a.history] == \
            [(h.iteration, h.val_loss, h.test_accuracy) for h in b.history]
