"""Engines that train N units of one architecture as one computation, chosen by capability.

``ENGINES`` lists them fastest first; :func:`make_engine` takes the first whose
:meth:`~lth.training.engines.base.Engine.supports` accepts the model and the number of units:

* ``mlp``: fully connected ReLU chains (LeNet-300-100, or any ``nn.Sequential`` of that shape),
  hand-written batched forward/backward with compact and sparse kernels (:mod:`.mlp`);
* ``vmap``: any model without BatchNorm or dropout, through ``torch.func.vmap`` (:mod:`.vmap`);
* ``module``: any ``nn.Module``, one unit at a time, with autograd (:mod:`.module`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...pruning import Mask
from .base import Engine, StackedEngine, convolutional
from .mlp import MLPEngine, linear_relu_chain
from .module import LossFn, ModuleEngine, StepFn
from .policy import DENSE_ONLY, EnginePolicy
from .vmap import VmapEngine, supports_batching

ENGINES: dict[str, type[Engine]] = {"mlp": MLPEngine, "vmap": VmapEngine, "module": ModuleEngine}

__all__ = ["DENSE_ONLY", "ENGINES", "Engine", "EnginePolicy", "MLPEngine", "ModuleEngine", "StackedEngine",
           "VmapEngine", "choose_engine", "linear_relu_chain", "make_engine", "max_units", "supports_batching"]


def choose_engine(model: nn.Module, n_units: int, name: str | None = None) -> type[Engine]:
    """The engine class for ``n_units`` copies of ``model``: ``name`` if given (checked), else
    the fastest capable one."""
    if name is not None:
        if name not in ENGINES:
            raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
        cls = ENGINES[name]
        if not cls.supports(model, n_units):
            raise ValueError(f"engine {name!r} cannot train {n_units} unit(s) of {type(model).__name__}")
        return cls
    for cls in ENGINES.values():
        # one unit of a model the hand-written engines do not cover runs on the model itself:
        # vmap over a single unit only adds overhead (and its convolutions lose channels-last)
        if cls is VmapEngine and n_units == 1:
            continue
        if cls.supports(model, n_units):
            return cls
    raise ValueError(f"no engine can train {n_units} units of {type(model).__name__} at once; "
                     "train them one at a time")


def max_units(model: nn.Module, device: str | torch.device = "cpu", policy: EnginePolicy | None = None) -> int | None:
    """How many units of ``model`` should train together on ``device``: None = any number, 1 = one
    at a time (no vectorised engine can train it, or, for convolutions on the CPU, one would be
    slower: :attr:`EnginePolicy.batch_convolutions_on_cpu`)."""
    policy = policy or EnginePolicy()
    if (torch.device(device).type == "cpu" and not policy.batch_convolutions_on_cpu
            and convolutional(model)):
        return 1
    return None if any(c.supports(model, 2) for c in ENGINES.values() if c is not ModuleEngine) else 1


def make_engine(template: nn.Module, states: Sequence[dict[str, torch.Tensor]], masks: Sequence[Mask],
                device, precision: str = "fp32", *, engine: str | None = None,
                policy: EnginePolicy | None = None, loss_fn: LossFn | None = None,
                step_fn: StepFn | None = None) -> Engine:
    """The fastest engine that can train ``len(states)`` units of ``template``'s architecture
    (or the one named by ``engine``). A custom ``loss_fn`` or ``step_fn`` needs the module engine,
    the only one that runs arbitrary code in the forward pass."""
    if loss_fn is not None or step_fn is not None:
        if engine not in (None, "module"):
            raise ValueError(f"a custom loss or training step runs on the module engine, not {engine!r}")
        return ModuleEngine(template, states, masks, device, precision, policy, loss_fn=loss_fn, step_fn=step_fn)
    cls = choose_engine(template, len(states), engine)
    return cls(template, states, masks, device, precision, policy)
