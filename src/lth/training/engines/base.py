"""The engine interface: N units of one architecture trained as one computation.

An engine holds N units' weights and the tensors an ordinary ``torch.optim`` optimizer steps
(Adam and SGD are elementwise, so one optimizer over stacked tensors is N independent optimizers).
The training loop (:mod:`lth.training.loop`) sees only this interface:

* ``loss_and_grad(x, y)``: per-unit mean cross-entropy on per-unit batches ``x[N, B, ...]``, with
  the gradients of :attr:`Engine.opt_params` set (pruned weights get exactly zero gradient);
* ``after_step()``: bring the weights up to date after the optimizer stepped;
* ``logits(x, units=...)``: per-unit outputs ``[N, M, classes]`` for one shared batch (evaluation),
  of every unit or of a chosen few;
* ``unit_state(i)``, ``unit_optimizer_state(...)``, ``stacked_optimizer_state(...)``: one unit's
  weights and optimizer state in the layout of a plain optimizer over ``model.parameters()``, so a
  checkpoint written by one engine resumes on any other.

Engines say what they can train (:meth:`Engine.supports`); :func:`lth.training.engines.make_engine`
picks the fastest capable one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...pruning import Mask
from .policy import EnginePolicy

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def convolutional(model: nn.Module) -> bool:
    """Whether ``model`` has 2-D convolutions: what decides the channels-last layout, the
    evaluation chunk and, on the CPU, training units one at a time (:class:`EnginePolicy`)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


class Engine:
    """The interface every engine implements (see the module docstring)."""

    #: Engines that draw from PyTorch's global generator during a step (dropout): the loop seeds it
    #: per unit and restores it on resume.
    uses_global_rng = False
    #: Whether :meth:`logits` wants ``xt``, the evaluation input transposed to [features, M] (a
    #: sparse first layer multiplies it); callers make it once per split, since splits are fixed.
    wants_transposed_eval_input = False
    #: The most images :meth:`logits` should get at once (None: no limit).
    eval_chunk_limit: int | None = None

    n_units: int
    device: torch.device
    opt_params: list[torch.Tensor]

    @classmethod
    def supports(cls, model: nn.Module, n_units: int) -> bool:
        """Whether this engine can train ``n_units`` copies of ``model``'s architecture."""
        raise NotImplementedError

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self) -> None:
        pass

    def logits(self, x: torch.Tensor, xt: torch.Tensor | None = None,
               units: Sequence[int] | None = None) -> torch.Tensor:
        """Outputs ``[len(units), M, classes]`` of the listed units (all units when ``None``)."""
        raise NotImplementedError

    def unit_state(self, i: int) -> dict[str, torch.Tensor]:
        """Unit ``i``'s weights and buffers as an ordinary state dict (a copy)."""
        raise NotImplementedError

    def unit_optimizer_state(self, stacked: dict[str, Any], i: int) -> dict[str, Any]:
        raise NotImplementedError

    def stacked_optimizer_state(self, units: Sequence[dict[str, Any]], template: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


def _stack(states: Sequence[dict[str, torch.Tensor]], names: list[str], device) -> dict[str, torch.Tensor]:
    return {n: torch.stack([s[n] for s in states]).to(device) for n in names}


class StackedEngine(Engine):
    """Weights stacked along a new leading unit dimension (``params``, in the template's
    ``named_parameters`` order), buffers and masks likewise."""

    def __init__(self, template: nn.Module, states: Sequence[dict[str, torch.Tensor]],
                 masks: Sequence[Mask], device, precision: str = "fp32",
                 policy: EnginePolicy | None = None):
        if len(states) != len(masks) or not states:
            raise ValueError(f"need one mask per unit, got {len(states)} states and {len(masks)} masks")
        if precision not in DTYPES:
            raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(DTYPES)}")
        self.policy = policy or EnginePolicy()
        self.template = template.to(device)
        self.device = torch.device(device)
        self.precision = precision
        self.compute_dtype = DTYPES[precision]
        self.n_units = len(states)
        self.param_names = [k for k, _ in template.named_parameters()]
        self.buffer_names = [k for k, _ in template.named_buffers()]
        self.params = _stack(states, self.param_names, device)
        self.buffers = _stack(states, self.buffer_names, device) if self.buffer_names else {}
        self.mask_names = [k for k in self.param_names if k in masks[0]]
        extra = set(masks[0]) - set(self.param_names)
        if extra:
            raise KeyError(f"mask names parameters the model does not have: {sorted(extra)}")
        self.masks = {k: torch.stack([m[k] for m in masks]).to(device, self.params[k].dtype)
                      for k in self.mask_names}
        with torch.no_grad():
            for k in self.mask_names:
                self.params[k].mul_(self.masks[k])  # pruned weights are exactly zero
        # name -> flat indices [N, nnz] of the surviving weights, for compactly optimised tensors
        self.compact: dict[str, torch.Tensor] = {}
        self.opt_params: list[torch.Tensor] = []

    # ------------------------------------------------------------------ weights
    def unit_state(self, i: int) -> dict[str, torch.Tensor]:
        """Unit ``i``'s weights as an ordinary state dict (a copy)."""
        state = {k: self.params[k][i].detach().clone() for k in self.param_names}
        state.update({k: self.buffers[k][i].clone() for k in self.buffer_names})
        return state

    # ------------------------------------------------------------------ optimizer state
    def unit_optimizer_state(self, stacked: dict[str, Any], i: int) -> dict[str, Any]:
        """Unit ``i``'s slice of the stacked optimizer's ``state_dict``, in the layout a plain
        ``torch.optim`` optimizer over the unit's ``model.parameters()`` uses (so a checkpoint
        written here resumes on any engine, and the other way round)."""
        state: dict[int, dict[str, Any]] = {}
        for j, name in enumerate(self.param_names):
            entry = stacked["state"].get(j)
            if entry is None:
                continue
            shape = self.params[name].shape
            out: dict[str, Any] = {}
            for key, value in entry.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == self.n_units:
                    v = value[i]
                    if name in self.compact:
                        dense = torch.zeros(shape[1:].numel(), dtype=v.dtype, device=v.device)
                        v = dense.scatter_(0, self.compact[name][i], v).view(shape[1:])
                    out[key] = v.detach().cpu().clone()
                else:
                    out[key] = value.clone() if isinstance(value, torch.Tensor) else value
            state[j] = out
        groups = [{**g, "params": list(range(len(self.param_names)))} for g in stacked["param_groups"]]
        return {"state": state, "param_groups": groups}

    def stacked_optimizer_state(self, units: Sequence[dict[str, Any]], template: dict[str, Any]) -> dict[str, Any]:
        """The inverse of :meth:`unit_optimizer_state`: per-unit states -> one stacked state_dict
        (``template`` is the fresh stacked optimizer's own ``state_dict()``)."""
        state: dict[int, dict[str, Any]] = {}
        for j, name in enumerate(self.param_names):
            entries = [u["state"].get(j) for u in units]
            if all(e is None for e in entries):
                continue
            if any(e is None for e in entries):
                raise ValueError(f"optimizer state of {name} is missing for some units")
            out: dict[str, Any] = {}
            for key in entries[0]:
                vals = [e[key] for e in entries]
                if isinstance(vals[0], torch.Tensor) and vals[0].dim() > 0:
                    stacked = torch.stack([v.to(self.device) for v in vals])
                    if name in self.compact:
                        stacked = stacked.flatten(1).gather(1, self.compact[name])
                    out[key] = stacked
                else:
                    out[key] = vals[0]
            state[j] = out
        groups = [{**g, **{k: v for k, v in units[0]["param_groups"][gi].items() if k != "params"}}
                  for gi, g in enumerate(template["param_groups"])]
        return {"state": state, "param_groups": groups}

    def _unit_index(self, units: Sequence[int] | None) -> torch.Tensor | None:
        if units is None:
            return None
        bad = [u for u in units if not 0 <= u < self.n_units]
        if bad or not units:
            raise ValueError(f"units {list(units)}: need unit indices in 0..{self.n_units - 1}")
        return torch.tensor(list(units), dtype=torch.long, device=self.device)
