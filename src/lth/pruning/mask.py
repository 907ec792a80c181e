"""The Mask type and what can be read off or done with a mask on its own.

A ``Mask`` maps a parameter name (as in ``model.named_parameters()`` of the unpruned model) to a
boolean tensor of the parameter's shape; True = kept.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

Mask = dict[str, torch.Tensor]


def full_mask(params: Mapping[str, torch.Tensor]) -> Mask:
    """The dense mask (everything kept) for the given parameters.

    >>> m = full_mask({"fc.weight": torch.zeros(2, 3)})
    >>> m["fc.weight"].dtype, bool(m["fc.weight"].all())
    (torch.bool, True)
    """
    return {k: torch.ones_like(v, dtype=torch.bool) for k, v in params.items()}


def density(mask: Mask) -> float:
    """Fraction of masked weights that survive (the paper's P_m over prunable weights).

    Layers count by their size, not as an average of per-layer densities.

    >>> density({"a": torch.tensor([True, False, True, True])})
    0.75
    """
    total = sum(m.numel() for m in mask.values())
    return sum(int(m.sum()) for m in mask.values()) / total if total else 1.0


def layer_stats(mask: Mask) -> dict[str, dict[str, int | float]]:
    """Per layer: total weights, remaining weights and their ratio.

    >>> layer_stats({"a": torch.tensor([True, False])})
    {'a': {'total': 2, 'remaining': 1, 'density': 0.5}}
    """
    return {
        n: {"total": m.numel(), "remaining": int(m.sum()), "density": float(m.float().mean())}
        for n, m in mask.items()
    }


def is_nested(inner: Mask, outer: Mask) -> bool:
    """True when every weight kept by ``inner`` is also kept by ``outer``.

    Iterative magnitude pruning only ever removes weights (paper Sec. 1, Algorithm step 4), so each
    level's mask is nested in the previous one.

    >>> is_nested({"a": torch.tensor([True, False])}, {"a": torch.tensor([True, True])})
    True
    """
    return all(bool((inner[n] & ~outer[n]).sum() == 0) for n in inner)


def mask_targets(module: nn.Module, mask: Mapping[str, torch.Tensor]) -> list[tuple[nn.Module, str, str]]:
    """``(owning module, attribute, name)`` for each mask entry, or one ValueError naming every
    name the module lacks and every shape that differs."""
    missing, shapes, out = [], [], []
    for name, m in mask.items():
        owner_name, _, attr = name.rpartition(".")
        try:
            owner = module.get_submodule(owner_name)
        except AttributeError:
            missing.append(name)
            continue
        t = getattr(owner, attr, None)
        if not isinstance(t, torch.Tensor):
            missing.append(name)
            continue
        if tuple(t.shape) != tuple(m.shape):
            shapes.append(f"{name}: mask {tuple(m.shape)} vs parameter {tuple(t.shape)}")
            continue
        out.append((owner, attr, name))
    if missing or shapes:
        parts = []
        if missing:
            parts.append(f"names the module lacks: {missing}")
        if shapes:
            parts.append(f"shapes that differ: {shapes}")
        raise ValueError(f"mask does not fit {type(module).__name__}; " + "; ".join(parts))
    return out


def apply_mask(module: nn.Module, mask: Mask) -> None:
    """Zero the pruned weights of ``module`` in place (entries where ``mask`` is False).

    Names are those of ``module.named_parameters()``; a name the module lacks or a shape that
    differs is a ValueError naming each one. A parameter pruned with torch.nn.utils.prune (it has
    ``weight_orig``) is refused: :func:`lth.pruning.to_torch_prune` adds a mask to such a module.

    >>> lin = nn.Linear(2, 2)
    >>> apply_mask(lin, {"weight": torch.tensor([[True, False], [False, True]])})
    >>> lin.weight[0, 1] == 0 and lin.weight[1, 0] == 0
    tensor(True)
    """
    targets = mask_targets(module, mask)
    pruned = [name for owner, attr, name in targets if isinstance(getattr(owner, f"{attr}_orig", None), nn.Parameter)]
    if pruned:
        raise ValueError(f"{pruned} carry a torch.nn.utils.prune mask; add to it with to_torch_prune, "
                         "or call torch.nn.utils.prune.remove first")
    with torch.no_grad():
        for owner, attr, name in targets:
            p = getattr(owner, attr)
            # a product, as the training loop applies masks, so both paths give the same bytes
            p.mul_(mask[name].to(p.device, p.dtype))
