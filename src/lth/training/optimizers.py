"""Optimizers: Adam or SGD, fused where PyTorch can, and a leaner fused Adam for tiny networks.

A LeNet-300-100 step at batch 60 takes about a millisecond on a CPU, so the Python bookkeeping
around ``torch.optim.Adam(fused=True)``'s single kernel (grouping tensors by device and dtype,
checking state, re-reading hyperparameters) is a visible share of it (docs/PERFORMANCE.md).
:class:`DirectFusedAdam` is that same optimizer: its first step, its state,
``state_dict``/``load_state_dict`` and its fallback are ``torch.optim.Adam``'s; later steps call the
same fused kernel with the same arguments directly, on lists made once. The numbers are bitwise
the same (``tests/training/test_optimizers.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import TrainConfig

__all__ = ["DirectFusedAdam", "make_optimizer"]


def make_optimizer(params: list[torch.Tensor] | list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD, fused (one kernel for the whole update) where PyTorch supports it.

    The update is elementwise and memory-bound, so one fused kernel beats the per-tensor loop by a
    wide margin on small networks (benchmarks/optimizer_step.py); fused Adam is
    :class:`DirectFusedAdam`. Devices or dtypes without a fused kernel take the foreach version."""
    if cfg.optimizer == "adam":
        def make(**kw):
            cls = DirectFusedAdam if kw.get("fused") else torch.optim.Adam
            return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)
    elif cfg.optimizer == "sgd":
        def make(**kw):
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **kw)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    try:
        return make(fused=True)
    except (RuntimeError, ValueError, TypeError):  # device/dtype without a fused kernel
        return make(foreach=True)

def _adam_step(opt: torch.optim.Adam, closure=None):
    """``torch.optim.Adam.step`` without the step-hook wrapper that torch.optim puts around every
    optimizer class's ``step`` (this class's ``step`` has one already: hooks run once)."""
    f = torch.optim.Adam.step
    return (f.__wrapped__ if getattr(f, "hooked", False) else f)(opt, closure)


class DirectFusedAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)`` that calls the fused kernel directly once its state exists.

    It falls back to ``torch.optim.Adam.step`` (the same update) whenever the direct call would
    not be exactly that: a closure, a parameter without a gradient, AMSGrad, maximize,
    capturable/differentiable modes, a tensor learning rate or betas, or mixed devices/dtypes in a
    group. The cached lists are rebuilt after ``load_state_dict`` and when parameters are added.
    """

    def __init__(self, params, **kwargs: Any) -> None:
        kwargs["fused"] = True
        self._lists: list[tuple] | None = None
        super().__init__(params, **kwargs)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._lists = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._lists = None

    def _build_lists(self) -> list[tuple] | None:
        """Per group: (params, exp_avgs, exp_avg_sqs, steps, kernel), or None if any group cannot
        take the direct path."""
        lists = []
        for group in self.param_groups:
            if (group["amsgrad"] or group["maximize"] or group["capturable"] or group["differentiable"]
                    or isinstance(group["lr"], torch.Tensor)
                    or any(isinstance(b, torch.Tensor) for b in group["betas"])):
                return None
            params = group["params"]
            if params and len({(p.device, p.dtype) for p in params}) != 1:
                return None
            states = [self.state.get(p) for p in params]
            if any(not s or "step" not in s for s in states):
                return None  # state not made yet (first step) or a parameter never updated
            kernel = torch._fused_adamw_ if group.get("decoupled_weight_decay") else torch._fused_adam_
            lists.append((params, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                          [s["step"] for s in states], kernel))
        return lists

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        if closure is not None:
            return _adam_step(self, closure)
        if self._lists is None:
            self._lists = self._build_lists()
            if self._lists is None:
                return _adam_step(self)
        grads = [[p.grad for p in entry[0]] for entry in self._lists]
        if any(g is None for gs in grads for g in gs):
            self._lists = None  # a parameter without a gradient this step: Adam skips it
            return _adam_step(self)
        for (params, exp_avgs, exp_avg_sqs, steps, kernel), group, gs in zip(self._lists, self.param_groups, grads):
            if not params:
                continue
            beta1, beta2 = group["betas"]
            torch._foreach_add_(steps, 1)
            kernel(params, gs, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                   beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                   maximize=False, grad_scale=None, found_inf=None)
        return None
