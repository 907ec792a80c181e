"""Any ``nn.Module``, one unit at a time, with autograd: BatchNorm, dropout, custom layers.

This is the reference engine: a plain forward/backward on the model itself, the way any PyTorch
user trains. The vectorised engines are checked against it (tests/training/test_engines.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...pruning import Mask
from ..precision import autocast
from .base import DTYPES, Engine, convolutional
from .policy import EnginePolicy

#: ``loss_fn(logits, targets) -> mean loss`` (default: cross-entropy).
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``step_fn(model, x, y) -> mean loss``: a custom forward for one training batch (the engine then
#: masks the gradients and the loop steps the optimizer).
StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class ModuleEngine(Engine):
    """Trains a copy of ``template`` holding the unit's state (the template is left untouched,
    as with every engine)."""

    # Dropout draws from PyTorch's global generator: the loop seeds it per unit.
    uses_global_rng = True

    @classmethod
    def supports(cls, model: nn.Module, n_units: int) -> bool:
        return n_units == 1

    def __init__(self, template: nn.Module, states: Sequence[dict[str, torch.Tensor]],
                 masks: Sequence[Mask], device, precision: str = "fp32",
                 policy: EnginePolicy | None = None, *, loss_fn: LossFn | None = None,
                 step_fn: StepFn | None = None):
        if len(states) != 1 or len(masks) != 1:
            raise ValueError(f"ModuleEngine trains one unit at a time, got {len(states)} states and "
                             f"{len(masks)} masks")
        if precision not in DTYPES:
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(DTYPES)}")
        self.device = torch.device(device)
        self.precision = precision
        self.n_units = 1
        self.model = copy.deepcopy(template).to(self.device)
        self.model.load_state_dict(states[0])
        # Convolutions run in channels-last layout (EnginePolicy.channels_last): the model's 4-D
        # weights are converted once, inputs per batch (a no-op for one-channel images).
        policy = policy or EnginePolicy()
        conv = convolutional(self.model)
        self.channels_last = policy.channels_last and conv
        if conv:
            self.eval_chunk_limit = policy.conv_eval_chunk_on(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        params = dict(self.model.named_parameters())
        missing = [k for k in masks[0] if k not in params]
        if missing:
            raise KeyError(f"mask names parameters the model does not have: {missing}")
        self._masked = [params[k] for k in masks[0]]
        # each mask in its weight's layout, so masking a gradient reads both in the same order
        self._masks = [torch.empty_like(params[k]).copy_(masks[0][k]) for k in masks[0]]
        with torch.no_grad():
            for p, m in zip(self._masked, self._masks):
                p.mul_(m)  # pruned weights are exactly zero
        self.opt_params = [p for p in self.model.parameters() if p.requires_grad]
        self.loss_fn = loss_fn
        self.step_fn = step_fn
        self.model.train()

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xb = self._layout(x[0])
        with autocast(self.device, self.precision):
            if self.step_fn is not None:
                loss = self.step_fn(self.model, xb, y[0])
            else:
                out = self.model(xb)
        if self.step_fn is None:
            loss = (self.loss_fn or F.cross_entropy)(out.float(), y[0])
        for p in self.opt_params:
            if p.grad is not None:
                p.grad.zero_()
        loss.backward()
        if self._masked:
            # zero gradient and zero optimizer state keep pruned weights exactly zero
            torch._foreach_mul_([p.grad for p in self._masked], self._masks)
        return loss.detach().view(1)

    @torch.no_grad()
    def logits(self, x: torch.Tensor, xt: torch.Tensor | None = None,
               units: Sequence[int] | None = None) -> torch.Tensor:
        if units is not None and list(units) != [0]:
            raise ValueError(f"units {list(units)}: this engine holds one unit (index 0)")
        self.model.eval()
        try:
            with autocast(self.device, self.precision):
                return self.model(self._layout(x)).float().unsqueeze(0)
        finally:
            self.model.train()

    def unit_state(self, i: int) -> dict[str, torch.Tensor]:
        # contiguous: a checkpoint has one layout whichever engine (and memory format) wrote it
        return {k: v.detach().clone(memory_format=torch.contiguous_format)
                for k, v in self.model.state_dict().items()}

    def unit_optimizer_state(self, stacked: dict[str, Any], i: int) -> dict[str, Any]:
        # The optimizer steps model.parameters() directly: its state is already the unit's.
        return {"state": {j: {k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
                              if isinstance(v, torch.Tensor) else v
                              for k, v in entry.items()} for j, entry in stacked["state"].items()},
                "param_groups": [dict(g) for g in stacked["param_groups"]]}

    def stacked_optimizer_state(self, units: Sequence[dict[str, Any]], template: dict[str, Any]) -> dict[str, Any]:
        """The unit's optimizer state, each tensor in its parameter's layout: torch's fused Adam
        reads a parameter and its moments as flat memory, so a channels-last weight with
        contiguous moments would be updated with another element's moments."""
        if not self.channels_last:
            return units[0]
        state = {}
        for j, entry in units[0]["state"].items():
            p = self.opt_params[int(j)]
            state[j] = {k: torch.empty_like(p, dtype=v.dtype, device=v.device).copy_(v)
                        if isinstance(v, torch.Tensor) and v.shape == p.shape else v
                        for k, v in entry.items()}
        return {"state": state, "param_groups": units[0]["param_groups"]}
