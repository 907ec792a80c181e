"""The training loop: N units of one architecture from a start iteration to the end, resumably.

Protocol (Frankle & Carbin 2019, App. B): training counts iterations; the training set is reshuffled
every epoch (each unit its own seeded order); validation and test loss/accuracy are measured every
``eval_every`` iterations, at the iteration a unit starts from (0, or k for a unit rewound to k, so
every curve starts at its start point) and at the last one; the early-stopping iteration is the
evaluated iteration with the minimum validation loss. With ``test_eval="best"`` the test split
is evaluated only where a unit's validation loss reaches a new minimum and at the last iteration,
which leaves the early stop and its test accuracy unchanged (:func:`lth.training.evaluation.needs_test`;
in a group the chosen units are evaluated in a narrower product, which some CPUs' BLAS rounds
differently in the last bit).

One loop serves every case: :func:`train_many` runs N units on an engine
(:mod:`lth.training.engines`: the fastest one that can train the architecture), and :func:`train`
is ``train_many`` with N = 1 on a given model. Each unit keeps its own initialisation, mask, data
order, optimizer state, evaluation history, early-stopping record and checkpoints; a checkpoint has
the same layout whichever engine wrote it, so a unit resumes on any engine and in any group.

Speed: no host synchronisation between evaluation points (the running training losses stay on the
device); batches are index tensors into data already on the device; the data order for iteration
``s`` is a pure function of (data seed, epoch), so resuming needs no sampler state. Training
batches (never validation or test) are augmented as ``augment`` says (``data.augment`` of the
experiment): each unit's parameters are drawn per epoch from its own data seed
(:func:`lth.data.augment.epoch_params`) and applied on the device, so a resumed run is augmented
exactly as an uninterrupted one.

The learning rate of iteration ``s`` is ``lr_at(s)``: by default the configured schedule
(:func:`lth.training.schedule.learning_rate`); the IMP driver passes the schedule its unit's branch
names (:func:`lth.training.schedule.lr_schedule`: replayed from the start step, or constant at its
final value for fine-tuning). A unit may start from a given optimizer state (``UnitInput.optimizer``,
e.g. the dense run's at the rewind iteration) instead of a fresh optimizer.

Pruned weights stay exactly zero: they start at zero (weights and, for a given start optimizer
state, their moments: :func:`lth.training.state.mask_optimizer_state`) and the engines zero their
gradients before every optimizer step. With zero gradient and zero state, Adam's and SGD's updates (with or without
momentum and L2 weight decay) are exactly zero, so masked weights never drift.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..data import Splits
from ..data import augment as augmentation
from ..pruning import Mask
from .engines import EnginePolicy, make_engine
from .engines.module import LossFn, StepFn
from .evaluation import eval_chunks, evaluate_many, needs_test
from .optimizers import make_optimizer
from .precision import denormals_flushed, ieee_fp32_on_gpu
from .schedule import epoch_permutation, iterations_per_epoch, learning_rate
from .state import (
    EvalPoint,
    TrainingDiverged,
    TrainResult,
    TrainState,
    capture_rng,
    mask_optimizer_state,
    restore_rng,
)

__all__ = ["UnitInput", "train", "train_many"]


@dataclass
class UnitInput:
    state: dict[str, torch.Tensor]  # starting weights (the mask is applied to them)
    mask: Mask
    data_seed: int
    resume: TrainState | None = None  # continue from this checkpoint instead of ``state``
    dropout_seed: int = 0  # seeds PyTorch's global generator for engines that draw from it
    #: The optimizer state to start from (the layout of :attr:`TrainState.optimizer`; the loop masks
    #: it like the weights), e.g. the dense run's at the rewind iteration; None: a fresh optimizer.
    optimizer: dict[str, Any] | None = None


def train_many(
    model: nn.Module,
    units: Sequence[UnitInput],
    splits: Splits,
    cfg: TrainConfig,
    *,
    start_step: int = 0,
    eval_batch_size: int = 10_000,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[dict[int, TrainState]], None] | None = None,
    capture_steps: frozenset[int] = frozenset(),
    on_capture: Callable[[int, int, dict[str, torch.Tensor]], None] | None = None,
    on_capture_optimizer: Callable[[int, int, dict[str, Any]], None] | None = None,
    on_eval: Callable[[int, EvalPoint], None] | None = None,
    test_eval: str = "every",
    flush_denormals: bool = False,
    engine: str | None = None,
    policy: EnginePolicy | None = None,
    loss_fn: LossFn | None = None,
    step_fn: StepFn | None = None,
    augment: str = "none",
    lr_at: Callable[[int], float] | None = None,
) -> list[TrainResult | TrainingDiverged]:
    """Train every unit from ``start_step`` (or its ``resume`` checkpoint) to ``cfg.iterations``.

    ``model`` is a template of the architecture (its own weights are not used). ``on_capture`` and
    ``on_eval`` get the unit's index first; ``on_checkpoint`` gets every live unit's state at once
    (``{index: TrainState}``), so the caller can commit a group's checkpoints together. A unit
    whose loss becomes NaN/inf is reported as a :class:`TrainingDiverged` in its slot; the others
    go on (their slices never mix). ``on_capture_optimizer`` gets, at the same ``capture_steps``,
    the unit's optimizer state (the layout of :attr:`TrainState.optimizer`).
    ``start_step`` is where the units start (their first evaluation); a unit with a ``resume``
    continues from its checkpoint. ``lr_at(s)``: the learning rate of iteration ``s`` (default
    ``learning_rate(cfg, s)``; :func:`lth.training.schedule.lr_schedule`). Units with a start
    optimizer state (``UnitInput.optimizer``) train only with others that have one.
    ``test_eval``: ``"every"`` or ``"best"`` (:func:`lth.training.evaluation.needs_test`, decided
    per unit: the test split is evaluated for just the units that need it). ``flush_denormals``:
    see :func:`lth.training.precision.denormals_flushed`. ``engine`` names an engine of
    :data:`lth.training.engines.ENGINES` (default: the fastest capable one); ``policy`` sets where
    the MLP engine's compact and sparse kernels take over. ``loss_fn(logits, y)`` replaces
    cross-entropy (training and validation/test loss; early stopping follows it) and
    ``step_fn(model, x, y) -> loss`` replaces the whole training forward; either trains on the
    module engine. ``augment``: the training-batch augmentation, a name of
    :data:`lth.config.AUGMENTATIONS` (``data.augment``; see :mod:`lth.data.augment`).
    """
    needs_test(test_eval, 0, 0, 0.0, 0.0)  # reject an unknown mode before any work
    augmentation.check_augment(augment)
    if not units:
        return []
    with denormals_flushed(flush_denormals), ieee_fp32_on_gpu(splits.train_x.device, cfg.precision):
        return _train_many(model, units, splits, cfg, start_step=start_step, eval_batch_size=eval_batch_size,
                           checkpoint_every=checkpoint_every, on_checkpoint=on_checkpoint,
                           capture_steps=capture_steps, on_capture=on_capture,
                           on_capture_optimizer=on_capture_optimizer, on_eval=on_eval,
                           test_eval=test_eval, engine=engine, policy=policy, loss_fn=loss_fn,
                           step_fn=step_fn, augment=augment,
                           lr_at=lr_at or (lambda s: learning_rate(cfg, s)))


def _train_many(model, units, splits, cfg, *, start_step, eval_batch_size, checkpoint_every, on_checkpoint,
                capture_steps, on_capture, on_capture_optimizer, on_eval, test_eval, engine, policy, loss_fn,
                step_fn, augment, lr_at) -> list[TrainResult | TrainingDiverged]:
    resumes = [u.resume for u in units]
    if any(r is not None for r in resumes):
        steps = {r.step if r is not None else None for r in resumes}
        if len(steps) != 1:
            raise ValueError(f"units resume from different iterations {sorted(map(str, steps))}; "
                             "group units by their resume point")
        step = resumes[0].step  # type: ignore[union-attr]
    else:
        step = start_step
    device = splits.train_x.device
    n_units = len(units)
    n = splits.train_x.shape[0]
    per_epoch = iterations_per_epoch(n, cfg.batch_size)
    states = [u.resume.model if u.resume is not None else u.state for u in units]
    eng = make_engine(model, states, [u.mask for u in units], device, cfg.precision, engine=engine,
                      policy=policy, loss_fn=loss_fn, step_fn=step_fn)
    opt = make_optimizer(eng.opt_params, cfg)
    val_chunks = eval_chunks(eng, splits.val_x, splits.val_y, eval_batch_size)
    test_chunks = eval_chunks(eng, splits.test_x, splits.test_y, eval_batch_size)
    histories: list[list[dict]] = [[] for _ in range(n_units)]
    running = torch.zeros(n_units, device=device)
    since_eval = 0
    elapsed = 0.0
    if resumes[0] is not None:
        opt.load_state_dict(eng.stacked_optimizer_state([r.optimizer for r in resumes], opt.state_dict()))
        histories = [list(r.history) for r in resumes]
        running = torch.stack([r.running_loss.to(device) if r.running_loss is not None
                               else torch.zeros((), device=device) for r in resumes])
        since_eval = resumes[0].since_eval
        elapsed = max(r.elapsed for r in resumes)
        if eng.uses_global_rng:
            restore_rng(resumes[0].rng)
    else:
        given = [u.optimizer is not None for u in units]
        if any(given):
            if not all(given):
                raise ValueError("some units start from a given optimizer state and others from a fresh "
                                 "one; group units by how their optimizer starts")
            names = [n for n, _ in model.named_parameters()]
            opt.load_state_dict(eng.stacked_optimizer_state(
                [mask_optimizer_state(u.optimizer, names, u.mask) for u in units], opt.state_dict()))
        if eng.uses_global_rng:
            # Dropout draws from PyTorch's global generator: seed it per unit so units are repeatable.
            torch.manual_seed(units[0].dropout_seed)
    failed: dict[int, TrainingDiverged] = {}
    t0 = time.perf_counter() - elapsed
    perm_stack = torch.empty(0)
    aug_stack: torch.Tensor | None = None  # [N, per_epoch * B, k]: this epoch's augmentation
    perm_epoch = -1

    best_val = [min((h["val_loss"] for h in hist), default=math.inf) for hist in histories]

    def do_eval(it: int) -> None:
        nonlocal running, since_eval
        train_loss = (running / since_eval).tolist() if since_eval else [None] * n_units
        vl, va = evaluate_many(eng, val_chunks, loss_fn=loss_fn)
        for i in range(n_units):
            if i in failed:
                continue
            tr = train_loss[i]
            if tr is not None and not math.isfinite(tr):
                failed[i] = TrainingDiverged(f"training loss became {tr} before iteration {it}")
            elif not math.isfinite(vl[i]):
                failed[i] = TrainingDiverged(f"validation loss became {vl[i]} at iteration {it}")
        want = [i for i in range(n_units)
                if i not in failed and needs_test(test_eval, it, cfg.iterations, vl[i], best_val[i])]
        test: dict[int, tuple[float, float]] = {}
        if want:
            tl, ta = evaluate_many(eng, test_chunks, None if len(want) == n_units else want, loss_fn=loss_fn)
            test = {i: (tl[j], ta[j]) for j, i in enumerate(want)}
        lr = lr_at(max(it - 1, start_step))
        for i in range(n_units):
            if i in failed:
                continue
            best_val[i] = min(best_val[i], vl[i])
            point = EvalPoint(it, train_loss[i], vl[i], va[i], *test.get(i, (None, None)), lr)
            histories[i].append(point.to_dict())
            if on_eval is not None:
                on_eval(i, point)
        running = torch.zeros(n_units, device=device)
        since_eval = 0

    evaluated = {h["iteration"] for h in histories[0]}
    y_all = splits.train_y
    first = step
    while True:
        if (step % cfg.eval_every == 0 or step in (start_step, cfg.iterations)) and step not in evaluated:
            do_eval(step)
            evaluated.add(step)
            if len(failed) == n_units:
                break
        if step in capture_steps and on_capture is not None:
            for i in range(n_units):
                if i not in failed:
                    on_capture(i, step, eng.unit_state(i))
        if step in capture_steps and on_capture_optimizer is not None:
            stacked = opt.state_dict()
            for i in range(n_units):
                if i not in failed:
                    on_capture_optimizer(i, step, eng.unit_optimizer_state(stacked, i))
        if (on_checkpoint is not None and checkpoint_every and step > first
                and step % checkpoint_every == 0 and step < cfg.iterations):
            stacked = opt.state_dict()
            rng = capture_rng()
            on_checkpoint({i: TrainState(step, eng.unit_state(i), eng.unit_optimizer_state(stacked, i),
                                         list(histories[i]), rng, time.perf_counter() - t0,
                                         running[i].clone(), since_eval)
                           for i in range(n_units) if i not in failed})
        if step >= cfg.iterations:
            break
        epoch, pos = divmod(step, per_epoch)
        if epoch != perm_epoch:
            perm_stack = torch.stack([epoch_permutation(n, u.data_seed, epoch, device) for u in units])
            aug_stack = augmentation.epoch_params(augment, [u.data_seed for u in units], epoch,
                                                  per_epoch * cfg.batch_size, device)
            perm_epoch = epoch
        batch = slice(pos * cfg.batch_size, (pos + 1) * cfg.batch_size)
        idx = perm_stack[:, batch]  # [N, B]
        lr = lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        flat = idx.reshape(-1)  # index_select is cheaper than advanced indexing for a [N, B] gather
        xb = splits.train_x.index_select(0, flat).view(*idx.shape, *splits.train_x.shape[1:])
        if aug_stack is not None:
            xb = augmentation.augment(xb, aug_stack[:, batch], augment)
        running += eng.loss_and_grad(xb, y_all.index_select(0, flat).view(idx.shape))
        opt.step()
        eng.after_step()
        since_eval += 1
        step += 1

    seconds = time.perf_counter() - t0
    results: list[TrainResult | TrainingDiverged] = []
    for i in range(n_units):
        if i in failed:
            results.append(failed[i])
            continue
        results.append(TrainResult(history=[EvalPoint(**h) for h in histories[i]],
                                   final_state=eng.unit_state(i), seconds=seconds / n_units))
    return results


def train(
    model: nn.Module,
    mask: Mask,
    splits: Splits,
    cfg: TrainConfig,
    *,
    data_seed: int,
    start_step: int = 0,
    resume: TrainState | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    capture_steps: frozenset[int] = frozenset(),
    on_capture: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
    on_eval: Callable[[EvalPoint], None] | None = None,
    eval_batch_size: int = 10_000,
    dropout_seed: int = 0,
    test_eval: str = "every",
    flush_denormals: bool = False,
    engine: str | None = None,
    policy: EnginePolicy | None = None,
    loss_fn: LossFn | None = None,
    step_fn: StepFn | None = None,
    augment: str = "none",
) -> TrainResult:
    """Train one unit: ``model`` (already initialised; ``mask`` is applied) from ``start_step`` to
    ``cfg.iterations``, as :func:`train_many` with N = 1. On return ``model`` holds the trained
    weights. A NaN/inf loss raises :class:`TrainingDiverged`.

    ``resume`` continues from a saved :class:`TrainState`; the result equals an uninterrupted run.
    ``capture_steps``: iterations whose weights are handed to ``on_capture`` (theta_k for rewinding).
    ``engine="module"`` trains the model itself with autograd (the reference engine).
    ``augment`` names the training-batch augmentation (:mod:`lth.data.augment`).
    """
    unit = UnitInput({k: v.detach() for k, v in model.state_dict().items()}, mask, data_seed, resume,
                     dropout_seed)
    (out,) = train_many(
        model, [unit], splits, cfg, start_step=start_step, eval_batch_size=eval_batch_size,
        checkpoint_every=checkpoint_every,
        on_checkpoint=None if on_checkpoint is None else (lambda states: on_checkpoint(states[0])),
        capture_steps=capture_steps,
        on_capture=None if on_capture is None else (lambda i, step, st: on_capture(step, st)),
        on_eval=None if on_eval is None else (lambda i, p: on_eval(p)),
        test_eval=test_eval, flush_denormals=flush_denormals, engine=engine, policy=policy,
        loss_fn=loss_fn, step_fn=step_fn, augment=augment)
    if isinstance(out, TrainingDiverged):
        raise out
    model.load_state_dict(out.final_state)
    return out
