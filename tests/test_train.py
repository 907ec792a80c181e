"""The training loop: masked weights stay zero, resume is exact, early stopping, schedule."""

from __future__ import annotations

import pytest
import torch

from lth.config import TrainConfig
from lth.data import load_splits
from lth.models import build_model, initialize, prunable_tensors
from lth.pruning import full_mask, random_mask_like
from lth.train import TrainState, apply_mask_, epoch_permutation, learning_rate, train


def _model(seed=0):
    m = build_model("mlp-100-50", (1, 8, 8), 10)
    initialize(m, torch.Generator().manual_seed(seed))
    return m


def _sparse_mask(model, seed=0, keep=0.3):
    dense = full_mask(prunable_tensors(model))
    g = torch.Generator().manual_seed(seed)
    return {n: (torch.rand(m.shape, generator=g) < keep) for n, m in dense.items()}


@pytest.mark.parametrize("optimizer, wd", [("adam", 0.0), ("adam", 1e-3), ("sgd", 1e-4)])
def test_pruned_weights_stay_exactly_zero_through_training(digits, optimizer, wd):
    model = _model()
    mask = _sparse_mask(model)
    apply_mask_(model, mask)
    cfg = TrainConfig(iterations=300, batch_size=32, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 1e-3,
                      weight_decay=wd, eval_every=100)
    res = train(model, mask, digits, cfg, data_seed=1)
    for n, m in mask.items():
        w = res.final_state[n]
        assert torch.count_nonzero(w[~m]) == 0, n
        # the survivors did train
        assert torch.count_nonzero(w[m]) == int(m.sum()), n


def test_resume_from_a_checkpoint_equals_uninterrupted_run(digits):
    cfg = TrainConfig(iterations=250, batch_size=32, eval_every=50)
    mask = _sparse_mask(_model())

    def fresh():
        m = _model()
        apply_mask_(m, mask)
        return m

    full = train(fresh(), mask, digits, cfg, data_seed=7)

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
        train(fresh(), mask, digits, cfg, data_seed=7, checkpoint_every=40, on_checkpoint=on_ckpt)
    import copy
    resumed = train(fresh(), mask, digits, cfg, data_seed=7, resume=copy.deepcopy(saved[-1]))
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


def test_epoch_permutation_is_a_permutation_and_reshuffles_each_epoch():
    p0 = epoch_permutation(1000, 5, 0, torch.device("cpu"))
    p1 = epoch_permutation(1000, 5, 1, torch.device("cpu"))
    assert sorted(p0.tolist()) == list(range(1000))
    assert not torch.equal(p0, p1)
    assert torch.equal(p0, epoch_permutation(1000, 5, 0, torch.device("cpu")))


def test_learning_rate_schedule_warmup_and_milestones():
    cfg = TrainConfig(iterations=1000, lr=0.1, lr_milestones=(500, 800), lr_gamma=0.1, warmup_iterations=100)
    assert learning_rate(cfg, 0) == pytest.approx(0.001)
    assert learning_rate(cfg, 99) == pytest.approx(0.1)
    assert learning_rate(cfg, 499) == pytest.approx(0.1)
    assert learning_rate(cfg, 500) == pytest.approx(0.01)
    assert learning_rate(cfg, 800) == pytest.approx(0.001)


def test_batch_larger_than_training_set_is_a_clear_error(digits):
    cfg = TrainConfig(iterations=10, batch_size=100_000)
    with pytest.raises(ValueError, match="batch_size"):
        train(_model(), full_mask({}), digits, cfg, data_seed=0)


def test_random_mask_training_keeps_its_own_zeros(digits):
    model = _model()
    mask = random_mask_like(_sparse_mask(model, keep=0.1), torch.Generator().manual_seed(3))
    apply_mask_(model, mask)
    res = train(model, mask, digits, TrainConfig(iterations=100, batch_size=32, eval_every=50), data_seed=0)
    for n, m in mask.items():
        assert torch.count_nonzero(res.final_state[n][~m]) == 0
