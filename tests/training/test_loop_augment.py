"""Training-batch augmentation in the training loop (``augment=`` of train / train_many): only
training batches are augmented, each unit from its own data seed, and a resumed run equals an
uninterrupted one exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lth.config import TrainConfig
from lth.data.augment import CROP_PAD, epoch_params
from lth.models import initialize
from lth.pruning import apply_mask, full_mask
from lth.training import TrainState, UnitInput, train, train_many
from lth.training.schedule import epoch_permutation, iterations_per_epoch
from tests.data.test_augment import reference_crop_flip

from .units import assert_same_training, equal_count_unit, mlp, states_of


def _model(seed=0):
    m = mlp()
    initialize(m, torch.Generator().manual_seed(seed))
    return m


class Seen(list):
    """A list that survives deepcopy as itself: the engines train a deep copy of the template."""

    def __deepcopy__(self, memo):
        return self


class Recorder(nn.Module):
    """Wraps a model and appends every input it sees, with whether it was in training mode, to
    ``seen``."""

    def __init__(self, inner: nn.Module, seen: Seen):
        super().__init__()
        self.inner = inner
        self.seen = seen

    def forward(self, x):
        self.seen.append((self.training, x.detach().clone()))
        return self.inner(x)


def test_training_batches_are_the_reference_augmentation_of_the_epochs_order(digits):
    cfg = TrainConfig(iterations=60, batch_size=32, eval_every=30)
    seen = Seen()
    train(Recorder(_model(), seen), full_mask({}), digits, cfg, data_seed=5, engine="module", augment="crop_flip")
    trains = [x for training, x in seen if training]
    train_x = digits.train_x
    n = train_x.shape[0]
    per_epoch = iterations_per_epoch(n, cfg.batch_size)
    assert len(trains) == cfg.iterations and per_epoch < cfg.iterations  # crosses an epoch boundary
    for step, x in enumerate(trains):
        epoch, pos = divmod(step, per_epoch)
        rows = slice(pos * cfg.batch_size, (pos + 1) * cfg.batch_size)
        idx = epoch_permutation(n, 5, epoch, train_x.device)[rows]
        params = epoch_params("crop_flip", [5], epoch, per_epoch * cfg.batch_size, "cpu")[0, rows]
        want = torch.from_numpy(reference_crop_flip(train_x[idx].numpy(), params.numpy(), CROP_PAD))
        assert torch.equal(x, want), step
        assert not torch.equal(x, train_x[idx]), step


def test_evaluation_sees_the_unaugmented_splits(digits):
    """The module engine evaluates the model in eval mode on the validation and test tensors."""
    cfg = TrainConfig(iterations=20, batch_size=32, eval_every=20)
    seen = Seen()
    train(Recorder(_model(), seen), full_mask({}), digits, cfg, data_seed=5, engine="module", augment="crop_flip")
    evals = torch.cat([x for training, x in seen if not training])
    trains = [x for training, x in seen if training]
    assert len(trains) == cfg.iterations
    # two evaluation points (iterations 0 and 20), each over validation then test, unchanged
    one = torch.cat([digits.val_x, digits.test_x])
    assert torch.equal(evals, torch.cat([one, one]))


def test_augmentation_changes_training(digits):
    cfg = TrainConfig(iterations=60, batch_size=32, eval_every=30)
    plain = train(_model(), full_mask({}), digits, cfg, data_seed=2)
    aug = train(_model(), full_mask({}), digits, cfg, data_seed=2, augment="crop_flip")
    again = train(_model(), full_mask({}), digits, cfg, data_seed=2, augment="crop_flip")
    assert [h.to_dict() for h in aug.history] == [h.to_dict() for h in again.history]
    assert aug.history[-1].val_loss != plain.history[-1].val_loss


@pytest.mark.parametrize("engine", [None, "module"])
def test_resume_with_augmentation_equals_uninterrupted_run(digits, engine):
    cfg = TrainConfig(iterations=250, batch_size=32, eval_every=50)  # 35 iterations per epoch
    model = _model()
    mask = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) < 0.4
            for n, p in model.named_parameters() if n.endswith("weight")}

    def fresh():
        m = _model()
        apply_mask(m, mask)
        return m

    full = train(fresh(), mask, digits, cfg, data_seed=7, engine=engine, augment="crop_flip")
    saved: list[TrainState] = []

    class Stop(Exception):
        pass

    def on_ckpt(state: TrainState) -> None:
        saved.append(copy.deepcopy(state))
        if state.step == 120:  # mid-epoch (epoch 3 starts at 105) and not an evaluation point
            raise Stop

    with pytest.raises(Stop):
        train(fresh(), mask, digits, cfg, data_seed=7, checkpoint_every=40, on_checkpoint=on_ckpt, engine=engine,
              augment="crop_flip")
    resumed = train(fresh(), mask, digits, cfg, data_seed=7, resume=saved[-1], engine=engine, augment="crop_flip")
    assert [h.to_dict() for h in resumed.history] == [h.to_dict() for h in full.history]
    for k in full.final_state:
        assert torch.equal(full.final_state[k], resumed.final_state[k]), k
    # and the augmentation mattered: without it the same resume point leads elsewhere
    plain = train(fresh(), mask, digits, cfg, data_seed=7, resume=saved[-1], engine=engine)
    assert plain.history[-1].val_loss != full.history[-1].val_loss


def test_units_trained_together_each_get_their_own_augmentation(digits):
    """A group's units (different data seeds) train as each would alone on the module engine."""
    cfg = TrainConfig(iterations=120, batch_size=32, lr=2e-3, eval_every=40)
    made = [equal_count_unit(s, 0.5) for s in range(2)]
    states = states_of(made)
    together = train_many(mlp(), [UnitInput(st, k, 10 + i) for i, (st, (_, k)) in enumerate(zip(states, made))],
                          digits, cfg, augment="crop_flip")
    for i, (_, k) in enumerate(made):
        m = mlp()
        m.load_state_dict(states[i])
        alone = train(m, k, digits, cfg, data_seed=10 + i, engine="module", augment="crop_flip")
        assert_same_training(together[i], alone)


def test_an_unknown_augmentation_is_refused_before_any_work(digits):
    with pytest.raises(ValueError, match="'mixup'.*none, crop_flip"):
        train_many(mlp(), [], digits, TrainConfig(), augment="mixup")
