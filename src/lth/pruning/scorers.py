"""Mask scorers: a registry of functions giving each weight a score; selection keeps the largest.

A scorer maps ``{name: weight tensor}`` to ``{name: score tensor}`` of the same shapes. ``model``
and ``batch`` are there for scorers that need a forward/backward pass (SNIP's |g * w| on one batch,
SynFlow's data-free flow); magnitude needs neither. Adding one is a decorated function here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import torch
from torch import nn


class Scorer(Protocol):
    def __call__(self, weights: Mapping[str, torch.Tensor], *, model: nn.Module | None = None,
                 batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]: ...


SCORERS: dict[str, Scorer] = {}


def register_scorer(name: str) -> Callable[[Scorer], Scorer]:
    """Decorator adding a scorer to :data:`SCORERS` under ``name``.

    >>> @register_scorer("squared")
    ... def squared(weights, *, model=None, batch=None):
    ...     return {n: w.detach() ** 2 for n, w in weights.items()}
    >>> score("squared", {"w": torch.tensor([-3.0, 1.0])})
    {'w': tensor([9., 1.])}
    >>> del SCORERS["squared"]  # leave the registry as the example found it
    """

    def deco(fn: Scorer) -> Scorer:
        if name in SCORERS:
            raise RuntimeError(f"scorer {name!r} registered twice")
        SCORERS[name] = fn
        return fn

    return deco


def scorer_names() -> list[str]:
    """Registered scorer names, sorted.

    >>> "magnitude" in scorer_names()
    True
    """
    return sorted(SCORERS)


def get_scorer(name: str) -> Scorer:
    """The scorer registered as ``name``; an unknown name is a ValueError listing the valid ones.

    >>> get_scorer("magnitude")({"w": torch.tensor([-2.0, 1.0])})
    {'w': tensor([2., 1.])}
    """
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; valid scorers: {', '.join(scorer_names())}") from None


def score(name: str, weights: Mapping[str, torch.Tensor], *, model: nn.Module | None = None,
          batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Scores of ``weights`` by the scorer ``name``, checked to have the weights' shapes.

    >>> score("magnitude", {"w": torch.tensor([[-3.0, 0.5]])})["w"]
    tensor([[3.0000, 0.5000]])
    """
    out = get_scorer(name)(weights, model=model, batch=batch)
    bad = [n for n in weights if n not in out or tuple(out[n].shape) != tuple(weights[n].shape)]
    if bad:
        raise ValueError(f"scorer {name!r} gave no score of the weight's shape for {bad}")
    return out


@register_scorer("magnitude")
def magnitude(weights: Mapping[str, torch.Tensor], *, model: nn.Module | None = None,
              batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """|w|: the paper's criterion, "prune the weights with the smallest magnitudes" (Sec. 1, step 4).

    >>> magnitude({"w": torch.tensor([-1.5, 0.0])})
    {'w': tensor([1.5000, 0.0000])}
    """
    return {n: w.detach().abs() for n, w in weights.items()}
