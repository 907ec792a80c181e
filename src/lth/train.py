"""Train one (possibly masked) network for a range of iterations, resumably.

Protocol (Frankle & Carbin 2019, App. B): training counts iterations; the training set is reshuffled
every epoch; validation and test loss/accuracy are measured every ``eval_every`` iterations
(including iteration 0 and the last one); the early-stopping iteration is the evaluated iteration
with the minimum validation loss. With ``test_eval="best"`` the test split is evaluated only where
the validation loss reaches a new minimum (strictly below every earlier one: exactly the points
that can become the early-stopping iteration) and at the last iteration, which leaves every
reported number unchanged (see :func:`needs_test`).

Speed notes: no host synchronisation happens between evaluation points (the running training loss
stays on the device); batches are index tensors into data already on the device; the data order
for iteration ``s`` is a pure function of (data seed, epoch), so resuming needs no sampler state.

Pruned weights stay exactly zero: they start at zero and their gradients are multiplied by the
mask before every optimizer step. With zero gradient and zero state, Adam's and SGD's updates (with
or without momentum and L2 weight decay) are exactly zero, so masked weights never drift.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .data import Splits
from .optim import DirectFusedAdam
from .pruning import Mask
from .seeds import derive_seed


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the unit is recorded as failed."""


@dataclass
class EvalPoint:
    iteration: int
    train_loss: float | None  # mean training loss since the previous evaluation
    val_loss: float
    val_accuracy: float
    test_loss: float | None  # None where the test split was not evaluated (test_eval="best")
    test_accuracy: float | None
    lr: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TrainState:
    """Everything needed to continue training exactly where it stopped."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    history: list[dict[str, Any]]
    rng: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0
    running_loss: torch.Tensor | None = None  # training-loss sum since the last evaluation
    since_eval: int = 0


@dataclass
class TrainResult:
    history: list[EvalPoint]
    final_state: dict[str, torch.Tensor]
    seconds: float

    @property
    def early_stop(self) -> EvalPoint:
        """The evaluation with the minimum validation loss (first one on ties)."""
        return min(self.history, key=lambda e: (e.val_loss, e.iteration))


def needs_test(test_eval: str, iteration: int, last_iteration: int, val_loss: float,
               best_val_loss: float) -> bool:
    """Whether an evaluation point measures the test split.

    ``"every"``: always. ``"best"``: at the last iteration (the final test accuracy) and wherever
    ``val_loss`` is strictly below ``best_val_loss``, the minimum of the earlier points. The early
    stop is the first point with the minimum validation loss, which is always such a point, so its
    test accuracy is always measured."""
    if test_eval == "every":
        return True
    if test_eval != "best":
        raise ValueError(f"test_eval = {test_eval!r}: choose every or best")
    return iteration == last_iteration or val_loss < best_val_loss


@contextmanager
def denormals_flushed(enabled: bool):
    """Flush denormal floats to zero on the CPU while training (``torch.set_flush_denormal``).

    A trained classifier is confident: about 10% of LeNet-300-100's softmax probabilities are
    denormal (below 1.2e-38), and every product that reads the loss gradient then takes the CPU's
    slow denormal path (a 50K-iteration level's late steps ~30% slower). Flushing changes only
    values below 1.2e-38, which mostly vanish when added to anything of normal size; where one
    does not (a last bit of a weight), the difference can grow over thousands of iterations, so
    results equal those without flushing statistically, not always bitwise. PyTorch has no getter
    for the mode, so it is switched off again on exit."""
    if not enabled or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def capture_rng() -> dict[str, Any]:
    """Every RNG a training step may draw from (dropout, CUDA kernels); data order is stateless."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD, fused (one kernel for the whole update) where PyTorch supports it.

    The update is elementwise and memory-bound; for LeNet-300-100 on a CPU the fused kernel is
    ~2.5x faster than the foreach one and ~6x faster than the per-tensor loop
    (benchmarks/train_step.py). Fused Adam is :class:`lth.optim.DirectFusedAdam`, which calls that
    kernel without torch.optim's per-step Python bookkeeping (the same numbers)."""
    if cfg.optimizer == "adam":
        def make(**kw):
            cls = DirectFusedAdam if kw.get("fused") else torch.optim.Adam
            return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)
    elif cfg.optimizer == "sgd":
        make = lambda **kw: torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                            weight_decay=cfg.weight_decay, **kw)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    try:
        return make(fused=True)
    except (RuntimeError, ValueError, TypeError):  # device/dtype without a fused kernel
        return make(foreach=True)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """LR at iteration ``step``: linear warm-up, then step decay at each milestone."""
    lr = cfg.lr * cfg.lr_gamma ** sum(step >= m for m in cfg.lr_milestones)
    if cfg.warmup_iterations and step < cfg.warmup_iterations:
        lr *= (step + 1) / cfg.warmup_iterations
    return lr


def iterations_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped); a clear error when none fits."""
    if n // batch_size < 1:
        raise ValueError(f"train.batch_size = {batch_size} is larger than the training set ({n} examples)")
    return n // batch_size


def epoch_permutation(n: int, data_seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The training-set order for one epoch: a pure function of the seed and the epoch number."""
    g = torch.Generator().manual_seed(derive_seed(data_seed, "epoch", epoch))
    return torch.randperm(n, generator=g).to(device)


def autocast(device: torch.device, precision: str):
    """bfloat16 matrix products (float32 weights and loss) for ``precision == "bf16"``."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int,
             precision: str = "fp32") -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole split, in large batches."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for i in range(0, x.shape[0], batch):
        with autocast(x.device, precision):
            out = model(x[i: i + batch]).float()
        yy = y[i: i + batch]
        loss += F.cross_entropy(out, yy, reduction="sum").double()
        correct += (out.argmax(1) == yy).sum()
    model.train(was_training)
    n = max(int(x.shape[0]), 1)
    return float(loss) / n, float(correct) / n


def masked_parameters(model: nn.Module, mask: Mask) -> list[tuple[torch.Tensor, torch.Tensor]]:
    params = dict(model.named_parameters())
    missing = [k for k in mask if k not in params]
    if missing:
        raise KeyError(f"mask names parameters the model does not have: {missing}")
    return [(params[k], mask[k].to(params[k].device, params[k].dtype)) for k in mask]


def apply_mask_(model: nn.Module, mask: Mask) -> None:
    """Zero the pruned weights in place."""
    with torch.no_grad():
        for p, m in masked_parameters(model, mask):
            p.mul_(m)


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
) -> TrainResult:
    """Train ``model`` (already initialised and masked) from ``start_step`` to ``cfg.iterations``.

    ``resume`` continues from a saved :class:`TrainState`; the result equals an uninterrupted run.
    ``capture_steps``: iterations whose weights are handed to ``on_capture`` (theta_k for rewinding).
    ``test_eval``: ``"every"`` or ``"best"`` (see :func:`needs_test`). ``flush_denormals``: see
    :func:`denormals_flushed`.
    """
    needs_test(test_eval, 0, 0, 0.0, 0.0)  # reject an unknown mode before any training
    with denormals_flushed(flush_denormals):
        return _train(model, mask, splits, cfg, data_seed=data_seed, start_step=start_step, resume=resume,
                      checkpoint_every=checkpoint_every, on_checkpoint=on_checkpoint,
                      capture_steps=capture_steps, on_capture=on_capture, on_eval=on_eval,
                      eval_batch_size=eval_batch_size, dropout_seed=dropout_seed, test_eval=test_eval)


def _train(model, mask, splits, cfg, *, data_seed, start_step, resume, checkpoint_every, on_checkpoint,
           capture_steps, on_capture, on_eval, eval_batch_size, dropout_seed, test_eval) -> TrainResult:
    device = splits.train_x.device
    n = splits.train_x.shape[0]
    per_epoch = iterations_per_epoch(n, cfg.batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg)
    pairs = masked_parameters(model, mask)
    grads_masks = [m for _, m in pairs]
    masked_params = [p for p, _ in pairs]

    history: list[dict[str, Any]] = []
    step = start_step
    elapsed = 0.0
    if resume is not None:
        model.load_state_dict(resume.model)
        opt.load_state_dict(resume.optimizer)
        history = list(resume.history)
        step = resume.step
        elapsed = resume.elapsed
        restore_rng(resume.rng)
        running = (resume.running_loss.to(device) if resume.running_loss is not None
                   else torch.zeros((), device=device))
        since_eval = resume.since_eval
    else:
        # Dropout draws from PyTorch's global generator; seed it per unit so units are repeatable.
        torch.manual_seed(dropout_seed)
        running = torch.zeros((), device=device)
        since_eval = 0
    model.train()

    t0 = time.perf_counter() - elapsed
    perm: torch.Tensor | None = None
    perm_epoch = -1

    best_val = min((h["val_loss"] for h in history), default=math.inf)

    def do_eval(it: int) -> None:
        nonlocal running, since_eval, best_val
        train_loss = float(running) / since_eval if since_eval else None
        if train_loss is not None and not math.isfinite(train_loss):
            raise TrainingDiverged(f"training loss became {train_loss} before iteration {it}")
        vl, va = evaluate(model, splits.val_x, splits.val_y, eval_batch_size, cfg.precision)
        if not math.isfinite(vl):
            raise TrainingDiverged(f"validation loss became {vl} at iteration {it}")
        tl = ta = None
        if needs_test(test_eval, it, cfg.iterations, vl, best_val):
            tl, ta = evaluate(model, splits.test_x, splits.test_y, eval_batch_size, cfg.precision)
        best_val = min(best_val, vl)
        point = EvalPoint(it, train_loss, vl, va, tl, ta, learning_rate(cfg, max(it - 1, 0)))
        history.append(point.to_dict())
        running = torch.zeros((), device=device)
        since_eval = 0
        if on_eval is not None:
            on_eval(point)

    evaluated = {h["iteration"] for h in history}
    while True:
        if step % cfg.eval_every == 0 or step == cfg.iterations:
            if step not in evaluated:
                do_eval(step)
                evaluated.add(step)
        if step in capture_steps and on_capture is not None:
            on_capture(step, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if (
            on_checkpoint is not None and checkpoint_every and step > start_step
            and step % checkpoint_every == 0 and step < cfg.iterations
        ):
            on_checkpoint(TrainState(step, model.state_dict(), opt.state_dict(), list(history),
                                     capture_rng(),
                                     time.perf_counter() - t0, running.clone(), since_eval))
        if step >= cfg.iterations:
            break
        epoch, pos = divmod(step, per_epoch)
        if epoch != perm_epoch:
            perm = epoch_permutation(n, data_seed, epoch, device)
            perm_epoch = epoch
        assert perm is not None
        idx = perm[pos * cfg.batch_size: (pos + 1) * cfg.batch_size]
        lr = learning_rate(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        with autocast(device, cfg.precision):
            out = model(splits.train_x[idx])
        loss = F.cross_entropy(out.float(), splits.train_y[idx])
        opt.zero_grad(set_to_none=False)
        loss.backward()
        if masked_params:
            torch._foreach_mul_([p.grad for p in masked_params], grads_masks)
        opt.step()
        running += loss.detach()
        since_eval += 1
        step += 1

    return TrainResult(
        history=[EvalPoint(**h) for h in history],
        final_state={k: v.detach().clone() for k, v in model.state_dict().items()},
        seconds=time.perf_counter() - t0,
    )
