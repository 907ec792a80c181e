"""Any model without BatchNorm or dropout, N units at once: ``functional_call`` under ``vmap``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from ..precision import autocast
from .base import StackedEngine, convolutional


def supports_batching(model: nn.Module) -> bool:
    """Vectorisable: no normalisation layers with running statistics (updated in place per unit)
    and no active dropout (which would draw one mask for all units)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return False
        if isinstance(m, nn.Dropout) and m.p > 0:
            return False
    return True


class VmapEngine(StackedEngine):
    """Any batchable model: ``functional_call`` under ``vmap``, gradients from autograd."""

    @classmethod
    def supports(cls, model: nn.Module, n_units: int) -> bool:
        return supports_batching(model)

    def __init__(self, template, states, masks, device, precision="fp32", policy=None):
        super().__init__(template, states, masks, device, precision, policy)
        if not supports_batching(template):
            raise ValueError(f"{type(template).__name__} has BatchNorm or dropout; "
                             "train its units one at a time")
        if convolutional(template):  # several units' activations per chunk: EnginePolicy
            self.eval_chunk_limit = self.policy.conv_eval_chunk_on(self.device)
        for p in self.params.values():
            p.requires_grad_(True)
        self.opt_params = [self.params[k] for k in self.param_names]
        buffers = self.buffers

        def fn(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(template, ({**p, **buffers} if buffers else p), (x,))

        self._train_forward = vmap(fn, in_dims=(0, 0))
        self._eval_forward = vmap(fn, in_dims=(0, None))
        self._mask_pairs = ([self.params[k] for k in self.mask_names], [self.masks[k] for k in self.mask_names])

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = self.n_units
        with autocast(self.device, self.precision):
            out = self._train_forward(self.params, x)  # [N, B, classes]
        per_unit = F.cross_entropy(out.float().flatten(0, 1), y.flatten(), reduction="none").view(n, -1).mean(1)
        for p in self.opt_params:
            p.grad = None
        # The sum of the units' losses: each unit's gradient is its own loss's gradient.
        per_unit.sum().backward()
        params, masks = self._mask_pairs
        if params:
            torch._foreach_mul_([p.grad for p in params], masks)
        return per_unit.detach()

    @torch.no_grad()
    def logits(self, x: torch.Tensor, xt: torch.Tensor | None = None,
               units: Sequence[int] | None = None) -> torch.Tensor:
        sel = self._unit_index(units)
        params = {k: v.detach() if sel is None else v.detach().index_select(0, sel)
                  for k, v in self.params.items()}
        if sel is None:
            forward = self._eval_forward
        else:  # the buffers of just these units
            buffers = {k: v.index_select(0, sel) for k, v in self.buffers.items()}
            template = self.template

            def fn(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xx: torch.Tensor) -> torch.Tensor:
                return functional_call(template, ({**p, **b} if b else p), (xx,))

            forward = lambda p, xx: vmap(fn, in_dims=(0, 0, None))(p, buffers, xx)  # noqa: E731
        with autocast(self.device, self.precision):
            return forward(params, x).float()
