"""Train N networks of one architecture at once, as one vectorised computation.

The units of an IMP level (trials x branches) share an architecture, a training configuration and
a start iteration; they differ in initial weights, mask and data order. Stacking their parameters
along a new leading dimension and running the model under ``torch.func.vmap`` turns N small
matrix products into one batched product per layer, which amortises PyTorch's per-operation
overhead (the dominant cost of a LeNet-300-100 step at batch 60 on a CPU) over N networks.

Each unit keeps its own initialisation, mask, data order (its own seeded permutation per epoch),
optimizer state (Adam/SGD are elementwise, so one optimizer over stacked tensors is N independent
optimizers) and evaluation history. The results equal training the units one at a time with
:func:`lth.train.train` up to floating-point rounding of batched vs. single matrix products.

Models with BatchNorm (running statistics updated in place) and dropout are not vectorised here;
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
from torch.func import functional_call, vmap

from .config import TrainConfig
from .data import Splits
from .pruning import Mask
from .train import (
    EvalPoint,
    TrainingDiverged,
    TrainResult,
    epoch_permutation,
    iterations_per_epoch,
    learning_rate,
    make_optimizer,
)


def supports_batching(model: nn.Module) -> bool:
    """Vectorisable: no normalisation layers with running statistics and no active dropout."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return False
        if isinstance(m, nn.Dropout) and m.p > 0:
            return False
    return True


@dataclass
class UnitInput:
    state: dict[str, torch.Tensor]  # initial weights (already masked)
    mask: Mask
    data_seed: int


def _stack(states: Sequence[dict[str, torch.Tensor]], names: list[str], device) -> dict[str, torch.Tensor]:
    return {n: torch.stack([s[n] for s in states]).to(device) for n in names}


@torch.no_grad()
def _evaluate_many(fn: Callable, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                   batch: int) -> tuple[list[float], list[float]]:
    """Mean loss and accuracy of every unit over a whole split (one batched forward per chunk)."""
    n_units = next(iter(params.values())).shape[0]
    loss = torch.zeros(n_units, dtype=torch.float64, device=x.device)
    correct = torch.zeros(n_units, dtype=torch.int64, device=x.device)
    for i in range(0, x.shape[0], batch):
        xb, yb = x[i: i + batch], y[i: i + batch]
        out = vmap(fn, in_dims=(0, None))(params, xb)  # [N, b, classes]
        ce = F.cross_entropy(out.flatten(0, 1), yb.repeat(n_units), reduction="none")
        loss += ce.view(n_units, -1).double().sum(1)
        correct += (out.argmax(2) == yb).sum(1)
    n = max(int(x.shape[0]), 1)
    return (loss / n).tolist(), (correct.double() / n).tolist()


def train_many(
    model: nn.Module,
    units: Sequence[UnitInput],
    splits: Splits,
    cfg: TrainConfig,
    *,
    start_step: int = 0,
    eval_batch_size: int = 10_000,
    on_eval: Callable[[int, EvalPoint], None] | None = None,
) -> list[TrainResult | TrainingDiverged]:
    """Train every unit from ``start_step`` to ``cfg.iterations``; one result per unit.

    ``model`` is a template of the architecture (its own weights are not used). A unit whose loss
    becomes NaN/inf is reported as a :class:`TrainingDiverged` in its slot; the others go on (their
    slices never mix with the failed one's).
    """
    if not supports_batching(model):
        raise ValueError(f"{type(model).__name__} has BatchNorm or dropout; train its units one at a time")
    device = splits.train_x.device
    n_units = len(units)
    n = splits.train_x.shape[0]
    per_epoch = iterations_per_epoch(n, cfg.batch_size)
    template = model.to(device)
    pnames = [k for k, _ in template.named_parameters()]
    bnames = [k for k, _ in template.named_buffers()]
    params = {k: v.requires_grad_(True) for k, v in _stack([u.state for u in units], pnames, device).items()}
    buffers = _stack([u.state for u in units], bnames, device) if bnames else {}
    mask_names = list(units[0].mask)
    masks = {k: torch.stack([u.mask[k] for u in units]).to(device, params[k].dtype) for k in mask_names}
    opt = make_optimizer(list(params.values()), cfg)
    masked = [params[k] for k in mask_names]
    mask_list = [masks[k] for k in mask_names]

    def fn(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(template, ({**p, **buffers} if buffers else p), (x,))

    batched_forward = vmap(fn, in_dims=(0, 0))
    histories: list[list[EvalPoint]] = [[] for _ in range(n_units)]
    failed: dict[int, TrainingDiverged] = {}
    running = torch.zeros(n_units, device=device)
    since_eval = 0
    perm_stack = torch.empty(0)
    perm_epoch = -1
    t0 = time.perf_counter()

    def do_eval(it: int) -> None:
        nonlocal running, since_eval
        train_loss = (running / since_eval).tolist() if since_eval else [None] * n_units
        detached = {k: v.detach() for k, v in params.items()}
        vl, va = _evaluate_many(fn, detached, splits.val_x, splits.val_y, eval_batch_size)
        tl, ta = _evaluate_many(fn, detached, splits.test_x, splits.test_y, eval_batch_size)
        lr = learning_rate(cfg, max(it - 1, 0))
        for i in range(n_units):
            if i in failed:
                continue
            tr = train_loss[i]
            if tr is not None and not math.isfinite(tr):
                failed[i] = TrainingDiverged(f"training loss became {tr} before iteration {it}")
                continue
            if not math.isfinite(vl[i]):
                failed[i] = TrainingDiverged(f"validation loss became {vl[i]} at iteration {it}")
                continue
            point = EvalPoint(it, tr, vl[i], va[i], tl[i], ta[i], lr)
            histories[i].append(point)
            if on_eval is not None:
                on_eval(i, point)
        running = torch.zeros(n_units, device=device)
        since_eval = 0

    step = start_step
    y_all = splits.train_y
    while True:
        if step % cfg.eval_every == 0 or step == cfg.iterations:
            do_eval(step)
            if len(failed) == n_units:
                break
        if step >= cfg.iterations:
            break
        epoch, pos = divmod(step, per_epoch)
        if epoch != perm_epoch:
            perm_stack = torch.stack([epoch_permutation(n, u.data_seed, epoch, device) for u in units])
            perm_epoch = epoch
        idx = perm_stack[:, pos * cfg.batch_size: (pos + 1) * cfg.batch_size]  # [N, B]
        for g in opt.param_groups:
            g["lr"] = learning_rate(cfg, step)
        out = batched_forward(params, splits.train_x[idx])  # [N, B, classes]
        per_unit = F.cross_entropy(out.flatten(0, 1), y_all[idx].flatten(), reduction="none")
        per_unit = per_unit.view(n_units, -1).mean(1)
        opt.zero_grad(set_to_none=False)
        # Sum of the units' mean losses: each unit's gradient is its own loss's gradient.
        per_unit.sum().backward()
        if masked:
            torch._foreach_mul_([p.grad for p in masked], mask_list)
        opt.step()
        running += per_unit.detach()
        since_eval += 1
        step += 1

    seconds = time.perf_counter() - t0
    results: list[TrainResult | TrainingDiverged] = []
    for i in range(n_units):
        if i in failed:
            results.append(failed[i])
            continue
        state = {k: params[k][i].detach().clone() for k in pnames}
        state.update({k: buffers[k][i].clone() for k in bnames})
        results.append(TrainResult(history=histories[i], final_state=state, seconds=seconds / n_units))
    return results

