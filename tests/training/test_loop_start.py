"""Where a unit starts in the training loop (lth.training.loop): its first evaluation at its start
step, the learning rate as a function of the iteration (lth.training.schedule.lr_schedule), and a
given start optimizer state (masked like the weights)."""

from __future__ import annotations

import pytest
import torch

from lth.config import TrainConfig
from lth.models import prunable_tensors
from lth.pruning import full_mask
from lth.training import (
    TrainState,
    UnitInput,
    learning_rate,
    lr_schedule,
    mask_optimizer_state,
    train_many,
)

from .units import assert_pruned_weights_zero, equal_count_unit, mlp, state_of

STEPPED = TrainConfig(iterations=120, batch_size=32, eval_every=40, lr=0.01, lr_milestones=(60,), lr_gamma=0.1)


def dense_unit(seed: int = 0):
    m, _ = equal_count_unit(seed, 1.0)
    return state_of(m), full_mask(prunable_tensors(m))


def run_to_k(cfg: TrainConfig, k: int, state, mask, engine: str):
    """Train a unit from 0 to the end, capturing its weights and optimizer state at ``k``."""
    got: dict[str, object] = {}
    (res,) = train_many(mlp(), [UnitInput(state, mask, 5)], digits_holder["splits"], cfg, engine=engine,
                        capture_steps=frozenset({k}),
                        on_capture=lambda i, s, st: got.__setitem__("weights", st),
                        on_capture_optimizer=lambda i, s, st: got.__setitem__("optimizer", st))
    return res, got["weights"], got["optimizer"]


digits_holder: dict[str, object] = {}


@pytest.fixture(autouse=True)
def _splits(digits):
    digits_holder["splits"] = digits


@pytest.mark.parametrize("engine", ["mlp", "module"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_unit_started_from_the_weights_and_optimizer_at_k_continues_the_run_exactly(digits, engine, optimizer):
    """Rewinding weights and optimizer to k (lottery.rewind_optimizer) and training on from k is
    the uninterrupted run: same final weights, bit for bit. A fresh optimizer at k is not."""
    cfg = TrainConfig(iterations=90, batch_size=32, eval_every=30, optimizer=optimizer, lr=0.01,
                      lr_milestones=(60,), lr_gamma=0.5)
    state, mask = dense_unit()
    full, theta_k, opt_k = run_to_k(cfg, 25, state, mask, engine)
    assert opt_k["state"], "the captured optimizer state has the moments of step 25"
    (again,) = train_many(mlp(), [UnitInput(theta_k, mask, 5, optimizer=opt_k)], digits, cfg,
                          start_step=25, engine=engine)
    for n in full.final_state:
        assert torch.equal(again.final_state[n], full.final_state[n]), n
    (fresh,) = train_many(mlp(), [UnitInput(theta_k, mask, 5)], digits, cfg, start_step=25, engine=engine)
    assert any(not torch.equal(fresh.final_state[n], full.final_state[n]) for n in mask)


@pytest.mark.parametrize("engine", ["mlp", "vmap", "module"])
def test_a_given_optimizer_state_is_masked_like_the_weights(digits, engine):
    cfg = TrainConfig(iterations=60, batch_size=32, eval_every=30)
    state, full = dense_unit()
    _, theta_k, opt_k = run_to_k(cfg, 20, state, full, "module")
    _, mask = equal_count_unit(3, 0.3)
    names = [n for n, _ in mlp().named_parameters()]
    # what the loop starts from, captured at its own start step before any update
    seen: dict[int, dict] = {}
    (res,) = train_many(mlp(), [UnitInput(theta_k, mask, 5, optimizer=opt_k)], digits, cfg, start_step=20,
                        engine=engine, capture_steps=frozenset({20}),
                        on_capture_optimizer=lambda i, s, st: seen.setdefault(s, st))
    start = seen[20]
    for j, name in enumerate(names):
        for key in ("exp_avg", "exp_avg_sq"):
            got, given = start["state"][j][key], opt_k["state"][j][key]
            if name in mask:
                assert torch.count_nonzero(got[~mask[name]]) == 0, (name, key)
                assert torch.equal(got[mask[name]], given[mask[name]]), (name, key)
                assert torch.count_nonzero(given[~mask[name]]) > 0  # so the zeros are the masking's
            else:  # biases are not pruned
                assert torch.equal(got, given)
        assert float(start["state"][j]["step"]) == 20.0  # Adam's bias correction goes on from k
    assert_pruned_weights_zero(res.final_state, mask)
    # training from it left the given state as it was (the driver shares one among several units)
    _, _, again = run_to_k(cfg, 20, state, full, "module")
    assert all(torch.equal(opt_k["state"][j][k], again["state"][j][k]) for j in again["state"]
               for k in again["state"][j])


def test_mask_optimizer_state_zeroes_exactly_the_pruned_entries_and_copies():
    names = ["a", "b"]
    mask = {"a": torch.tensor([True, False, True])}
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.tensor([1.0, -2.0, 3.0])},
                       1: {"momentum_buffer": torch.tensor([4.0, 5.0])}},
             "param_groups": [{"lr": 0.1, "params": [0, 1]}]}
    out = mask_optimizer_state(state, names, mask)
    assert out["state"][0]["exp_avg"].tolist() == [1.0, 0.0, 3.0]
    assert not torch.signbit(out["state"][0]["exp_avg"][1])  # +0, not -0
    assert out["state"][0]["step"] == 3.0 and out["state"][1]["momentum_buffer"].tolist() == [4.0, 5.0]
    assert state["state"][0]["exp_avg"].tolist() == [1.0, -2.0, 3.0]  # the input is left as it was
    assert out["param_groups"] == state["param_groups"]
    # new tensors throughout, so stepping an optimizer that loaded them leaves the input as it was
    assert out["state"][1]["momentum_buffer"].data_ptr() != state["state"][1]["momentum_buffer"].data_ptr()
    assert out["state"][0]["step"].data_ptr() != state["state"][0]["step"].data_ptr()


def test_units_with_given_and_fresh_optimizers_are_not_trained_together(digits):
    cfg = TrainConfig(iterations=20, batch_size=32, eval_every=10)
    state, mask = dense_unit()
    _, theta_k, opt_k = run_to_k(cfg, 5, state, mask, "module")
    with pytest.raises(ValueError, match="group units by how their optimizer starts"):
        train_many(mlp(), [UnitInput(theta_k, mask, 0, optimizer=opt_k), UnitInput(theta_k, mask, 1)],
                   digits, cfg, start_step=5)


# ---------------------------------------------------------------------------------------- start point


def test_the_first_evaluation_is_at_the_start_step_even_off_the_eval_grid(digits):
    state, mask = dense_unit()
    (res,) = train_many(mlp(), [UnitInput(state, mask, 1)], digits, STEPPED, start_step=30)
    assert [h.iteration for h in res.history] == [30, 40, 80, 120]
    (dense,) = train_many(mlp(), [UnitInput(state, mask, 1)], digits, STEPPED)
    assert [h.iteration for h in dense.history] == [0, 40, 80, 120]


def test_a_unit_started_off_the_grid_resumes_without_evaluating_its_start_again(digits):
    state, mask = dense_unit()
    (ref,) = train_many(mlp(), [UnitInput(state, mask, 1)], digits, STEPPED, start_step=30)
    saved: list[TrainState] = []
    train_many(mlp(), [UnitInput(state, mask, 1)], digits, STEPPED, start_step=30, checkpoint_every=50,
               on_checkpoint=lambda states: saved.append(states[0]))
    assert saved[0].step == 50
    (resumed,) = train_many(mlp(), [UnitInput(state, mask, 1, resume=saved[0])], digits, STEPPED, start_step=30)
    assert [h.to_dict() for h in resumed.history] == [h.to_dict() for h in ref.history]
    assert all(torch.equal(resumed.final_state[k], ref.final_state[k]) for k in ref.final_state)


# ---------------------------------------------------------------------------------------- learning rate


def test_lr_schedule_replays_the_schedule_or_holds_its_final_value():
    sched, final = lr_schedule(STEPPED), lr_schedule(STEPPED, "final")
    assert [sched(s) for s in (0, 59, 60, 119)] == [0.01, 0.01, pytest.approx(0.001), pytest.approx(0.001)]
    assert {final(s) for s in (0, 30, 119)} == {learning_rate(STEPPED, 119)}
    assert final(0) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="choose one of schedule, final"):
        lr_schedule(STEPPED, "cosine")


def test_the_recorded_learning_rate_is_that_of_the_step_before_each_point_and_of_the_first_at_the_start(digits):
    state, mask = dense_unit()
    (res,) = train_many(mlp(), [UnitInput(state, mask, 1)], digits, STEPPED, start_step=30)
    assert [h.lr for h in res.history] == [0.01, 0.01, learning_rate(STEPPED, 79), learning_rate(STEPPED, 119)]
    assert learning_rate(STEPPED, 79) == pytest.approx(0.001)
    (ft,) = train_many(mlp(), [UnitInput(state, mask, 1)], digits, STEPPED, start_step=30,
                       lr_at=lr_schedule(STEPPED, "final"))
    assert [h.lr for h in ft.history] == [learning_rate(STEPPED, 119)] * 4


def test_the_optimizer_steps_at_the_rate_lr_at_gives(digits):
    """Training with the final rate held is training with that constant rate configured."""
    state, mask = dense_unit()
    (ft,) = train_many(mlp(), [UnitInput(state, mask, 1)], digits, STEPPED, start_step=30,
                       lr_at=lr_schedule(STEPPED, "final"))
    constant = TrainConfig(iterations=120, batch_size=32, eval_every=40, lr=learning_rate(STEPPED, 119))
    (ref,) = train_many(mlp(), [UnitInput(state, mask, 1)], digits, constant, start_step=30)
    assert all(torch.equal(ft.final_state[k], ref.final_state[k]) for k in ref.final_state)
    (sched,) = train_many(mlp(), [UnitInput(state, mask, 1)], digits, STEPPED, start_step=30)
    assert any(not torch.equal(sched.final_state[k], ref.final_state[k]) for k in ref.final_state)
