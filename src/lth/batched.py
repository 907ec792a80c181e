"""Train N units of one architecture at once, as one vectorised computation.

The units of an IMP level (trials x branches, one-shot targets) share an architecture, a training
configuration and a start iteration; they differ in initial weights, mask and data order. The
engines of :mod:`lth.stacked` stack their parameters along a new leading dimension, turning N small
matrix products into one batched product per layer and amortising PyTorch's per-operation
overhead (the dominant cost of a LeNet-300-100 step at batch 60 on a CPU) over N networks.

Each unit keeps its own initialisation, mask, data order (its own seeded permutation per epoch),
optimizer state, evaluation history and early-stopping record, and its own checkpoints, in the
same format :func:`lth.train.train` writes, so a unit interrupted here resumes one-at-a-time and the
other way round. The results equal training the units one at a time with :func:`lth.train.train`
up to floating-point rounding of batched vs. single matrix products (``tests/test_batched.py``).

Models with BatchNorm (running statistics updated in place) or dropout are not vectorised;
:func:`supports_batching` says whether a model qualifies.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .data import Splits
from .pruning import Mask
from .stacked import Engine, make_engine, supports_batching
from .train import (
    EvalPoint,
    TrainingDiverged,
    TrainResult,
    TrainState,
    capture_rng,
    denormals_flushed,
    epoch_permutation,
    iterations_per_epoch,
    learning_rate,
    make_optimizer,
    needs_test,
)

__all__ = ["UnitInput", "train_many", "supports_batching"]


@dataclass
class UnitInput:
    state: dict[str, torch.Tensor]  # starting weights (the mask is applied to them)
    mask: Mask
    data_seed: int
    resume: TrainState | None = None  # continue from this checkpoint instead of ``state``


def _eval_chunks(engine: Engine, x: torch.Tensor, y: torch.Tensor, batch: int) -> list[tuple]:
    """A split in evaluation chunks of at most ``batch`` images (fewer where the engine asks:
    :attr:`Engine.eval_chunk_limit`), each with its transposed copy when the engine's first layer
    is a sparse product (made once per training call: the split does not change)."""
    want = engine.wants_transposed_eval_input
    batch = min(batch, engine.eval_chunk_limit or batch)
    chunks = []
    for i in range(0, x.shape[0], batch):
        xb = x[i: i + batch]
        chunks.append((xb, y[i: i + batch], xb.reshape(xb.shape[0], -1).t().contiguous() if want else None))
    return chunks


@torch.no_grad()
def _evaluate_many(engine: Engine, chunks: list[tuple],
                   units: list[int] | None = None) -> tuple[list[float], list[float]]:
    """Mean loss and accuracy over a whole split (one batched forward per chunk) of every unit, or
    of the units listed in ``units`` (in that order)."""
    n_units = engine.n_units if units is None else len(units)
    device = engine.device
    loss = torch.zeros(n_units, dtype=torch.float64, device=device)
    correct = torch.zeros(n_units, dtype=torch.int64, device=device)
    n = 0
    for xb, yb, xt in chunks:
        out = engine.logits(xb, xt=xt, units=units)  # [N, b, classes]
        ce = F.cross_entropy(out.flatten(0, 1), yb.repeat(n_units), reduction="none")
        loss += ce.view(n_units, -1).double().sum(1)
        correct += (out.argmax(2) == yb).sum(1)
        n += int(xb.shape[0])
    n = max(n, 1)
    return (loss / n).tolist(), (correct.double() / n).tolist()


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
    on_eval: Callable[[int, EvalPoint], None] | None = None,
    test_eval: str = "every",
    flush_denormals: bool = False,
) -> list[TrainResult | TrainingDiverged]:
    """Train every unit from ``start_step`` (or its ``resume`` checkpoint) to ``cfg.iterations``.

    ``model`` is a template of the architecture (its own weights are not used). ``on_capture`` and
    ``on_eval`` get the unit's index first; ``on_checkpoint`` gets every live unit's state at once
    (``{index: TrainState}``), so the caller can commit a group's checkpoints together. A unit whose loss becomes NaN/inf is reported as a
    :class:`TrainingDiverged` in its slot; the others go on (their slices never mix).
    ``test_eval``: ``"every"`` or ``"best"`` (:func:`lth.train.needs_test`, decided per unit: the
    test split is evaluated for just the units that need it). ``flush_denormals``: see
    :func:`lth.train.denormals_flushed`.
    """
    needs_test(test_eval, 0, 0, 0.0, 0.0)  # reject an unknown mode before any work
    if not units:
        return []
    with denormals_flushed(flush_denormals):
        return _train_many(model, units, splits, cfg, start_step=start_step, eval_batch_size=eval_batch_size,
                           checkpoint_every=checkpoint_every, on_checkpoint=on_checkpoint,
                           capture_steps=capture_steps, on_capture=on_capture, on_eval=on_eval,
                           test_eval=test_eval)


def _train_many(model, units, splits, cfg, *, start_step, eval_batch_size, checkpoint_every, on_checkpoint,
                capture_steps, on_capture, on_eval, test_eval) -> list[TrainResult | TrainingDiverged]:
    if not supports_batching(model):
        raise ValueError(f"{type(model).__name__} has BatchNorm or dropout; train its units one at a time")
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
    engine = make_engine(model, states, [u.mask for u in units], device, cfg.precision)
    opt = make_optimizer(engine.opt_params, cfg)
    val_chunks = _eval_chunks(engine, splits.val_x, splits.val_y, eval_batch_size)
    test_chunks = _eval_chunks(engine, splits.test_x, splits.test_y, eval_batch_size)
    histories: list[list[dict]] = [[] for _ in range(n_units)]
    running = torch.zeros(n_units, device=device)
    since_eval = 0
    elapsed = 0.0
    if resumes[0] is not None:
        opt.load_state_dict(engine.stacked_optimizer_state([r.optimizer for r in resumes], opt.state_dict()))
        histories = [list(r.history) for r in resumes]
        running = torch.stack([r.running_loss.to(device) if r.running_loss is not None
                               else torch.zeros((), device=device) for r in resumes])
        since_eval = resumes[0].since_eval
        elapsed = max(r.elapsed for r in resumes)
    failed: dict[int, TrainingDiverged] = {}
    t0 = time.perf_counter() - elapsed
    perm_stack = torch.empty(0)
    perm_epoch = -1

    best_val = [min((h["val_loss"] for h in hist), default=math.inf) for hist in histories]

    def do_eval(it: int) -> None:
        nonlocal running, since_eval
        train_loss = (running / since_eval).tolist() if since_eval else [None] * n_units
        vl, va = _evaluate_many(engine, val_chunks)
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
            tl, ta = _evaluate_many(engine, test_chunks, None if len(want) == n_units else want)
            test = {i: (tl[j], ta[j]) for j, i in enumerate(want)}
        lr = learning_rate(cfg, max(it - 1, 0))
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
        if (step % cfg.eval_every == 0 or step == cfg.iterations) and step not in evaluated:
            do_eval(step)
            evaluated.add(step)
            if len(failed) == n_units:
                break
        if step in capture_steps and on_capture is not None:
            for i in range(n_units):
                if i not in failed:
                    on_capture(i, step, engine.unit_state(i))
        if (on_checkpoint is not None and checkpoint_every and step > first
                and step % checkpoint_every == 0 and step < cfg.iterations):
            stacked = opt.state_dict()
            rng = capture_rng()
            on_checkpoint({i: TrainState(step, engine.unit_state(i), engine.unit_optimizer_state(stacked, i),
                                         list(histories[i]), rng, time.perf_counter() - t0,
                                         running[i].clone(), since_eval)
                           for i in range(n_units) if i not in failed})
        if step >= cfg.iterations:
            break
        epoch, pos = divmod(step, per_epoch)
        if epoch != perm_epoch:
            perm_stack = torch.stack([epoch_permutation(n, u.data_seed, epoch, device) for u in units])
            perm_epoch = epoch
        idx = perm_stack[:, pos * cfg.batch_size: (pos + 1) * cfg.batch_size]  # [N, B]
        lr = learning_rate(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        flat = idx.reshape(-1)  # index_select is cheaper than advanced indexing for a [N, B] gather
        xb = splits.train_x.index_select(0, flat).view(*idx.shape, *splits.train_x.shape[1:])
        running += engine.loss_and_grad(xb, y_all.index_select(0, flat).view(idx.shape))
        opt.step()
        engine.after_step()
        since_eval += 1
        step += 1

    seconds = time.perf_counter() - t0
    results: list[TrainResult | TrainingDiverged] = []
    for i in range(n_units):
        if i in failed:
            results.append(failed[i])
            continue
        results.append(TrainResult(history=[EvalPoint(**h) for h in histories[i]],
                                   final_state=engine.unit_state(i), seconds=seconds / n_units))
    return results
