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
from .base import DTYPES, Engine
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
        params = dict(self.model.named_parameters())
        missing = [k for k in masks[0] if k not in params]
        if missing:
            raise KeyError(f"mask names parameters the model does not have: {missing}")
        self._masked = [params[k] for k in masks[0]]
        self._masks = [masks[0][k].to(self.device, params[k].dtype) for k in masks[0]]
        with torch.no_grad():
            for p, m in zip(self._masked, self._masks):
                p.mul_(m)  # pruned weights are exactly zero
        self.opt_params = [p for p in self.model.parameters() if p.requires_grad]
        self.loss_fn = loss_fn
        self.step_fn = step_fn
        self.model.train()

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            if self.step_fn is not None:
                loss = self.step_fn(self.model, x[0], y[0])
            else:
                out = self.model(x[0])
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
                return self.model(x).float().unsqueeze(0)
        finally:
            self.model.train()

    def unit_state(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def unit_optimizer_state(self, stacked: dict[str, Any], i: int) -> dict[str, Any]:
        # The optimizer steps model.parameters() directly: its state is already the unit's.
        return {"state": {j: {k: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v
                              for k, v in entry.items()} for j, entry in stacked["state"].items()},
                "param_groups": [dict(g) for g in stacked["param_groups"]]}

    def stacked_optimizer_state(self, units: Sequence[dict[str, Any]], template: dict[str, Any]) -> dict[str, Any]:
        return units[0]
