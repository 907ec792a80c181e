"""Optimizers with less per-step bookkeeping than ``torch.optim``'s, for tiny networks.

A LeNet-300-100 step at batch 60 takes about a millisecond on a CPU. ``torch.optim.Adam(fused=True)``
spends about 35 microseconds of it in Python around its single fused kernel: grouping tensors by
device and dtype, checking state, re-reading hyperparameters (180 vs 147 us per step on 2 cores,
benchmarks/results/optimizer_step.md; inside a training step a one-off A/B measured 45-55 us, see
docs/PERFORMANCE.md). :class:`DirectFusedAdam` is that same optimizer: its first step,
its state, ``state_dict``/``load_state_dict`` and its fallback are ``torch.optim.Adam``'s; later
steps call the same fused kernel with the same arguments directly, on lists made once. The numbers
are bitwise the same (``tests/test_optim.py``).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["DirectFusedAdam"]


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
