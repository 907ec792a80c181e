"""The bridge to torch.nn.utils.prune: lth masks on torch-pruned modules and back, and the
one-call winning ticket for any nn.Module.

A module pruned with torch.nn.utils.prune keeps, for each pruned parameter ``weight``, the original
values as the parameter ``weight_orig`` and the mask as the buffer ``weight_mask``; a forward
pre-hook sets ``weight = weight_orig * weight_mask``. lth names a mask entry as in the unpruned
module (``fc.weight``), so masks move freely between both worlds.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils import prune

from ..models.introspection import Patterns, Types, get_tensor, prunable_parameters
from .counts import count_from_amount
from .mask import Mask, mask_targets
from .scorers import score
from .selection import select_global, select_layerwise


def to_torch_prune(module: nn.Module, mask: Mask) -> nn.Module:
    """Attach ``mask`` to ``module`` with ``torch.nn.utils.prune.custom_from_mask``, in place.

    Each masked parameter becomes ``<name>_orig`` (values unchanged) plus the buffer
    ``<name>_mask``, so ``torch.nn.utils.prune.remove`` makes the pruning permanent. On a parameter
    that is already pruned, torch combines the masks (a weight survives only if both keep it).
    A name the module lacks or a shape that differs is a ValueError naming each one. As with every
    torch.nn.utils.prune call, ``<name>_orig`` is registered after the module's other parameters,
    and the module cannot be deep-copied until ``prune.remove``.

    >>> from torch.nn.utils import prune
    >>> lin = nn.Linear(2, 2)
    >>> _ = to_torch_prune(lin, {"weight": torch.tensor([[True, False], [False, True]])})
    >>> lin.weight_mask
    tensor([[1., 0.],
            [0., 1.]])
    >>> _ = prune.remove(lin, "weight")
    >>> bool(lin.weight[0, 1] == 0), isinstance(lin.weight, nn.Parameter)
    (True, True)
    """
    for owner, attr, name in mask_targets(module, mask):
        prune.custom_from_mask(owner, attr, mask[name].to(get_tensor(module, name).device))
    return module


def _pruned_names(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``(unpruned name, mask buffer)`` for each torch-pruned tensor of ``module``, module order."""
    out = []
    for mod_name, mod in module.named_modules():
        for buf_name, buf in mod.named_buffers(recurse=False):
            base = buf_name[: -len("_mask")]
            if buf_name.endswith("_mask") and isinstance(getattr(mod, f"{base}_orig", None), nn.Parameter):
                out.append((f"{mod_name}.{base}" if mod_name else base, buf))
    return out


def from_torch_prune(module: nn.Module) -> Mask:
    """The mask a torch-pruned module carries: ``{name: bool tensor}`` from its ``*_mask`` buffers.

    Names are those of the unpruned module (``fc.weight``, not ``fc.weight_orig``); parameters
    that are not pruned have no entry.

    >>> from torch.nn.utils import prune
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> _ = prune.l1_unstructured(net[2], "weight", amount=2)
    >>> m = from_torch_prune(net)
    >>> list(m), int(m["2.weight"].sum())
    (['2.weight'], 4)
    """
    return {name: buf.detach().bool().clone() for name, buf in _pruned_names(module)}


def _check_match(trained: nn.Module, copy: nn.Module, names: list[str], trained_names: list[str]) -> None:
    missing = [n for n in names if n not in trained_names]
    unexpected = [n for n in trained_names if n not in names]
    shapes = [f"{n}: trained {tuple(get_tensor(trained, n).shape)} vs copy {tuple(get_tensor(copy, n).shape)}"
              for n in names if n in trained_names
              and get_tensor(trained, n).shape != get_tensor(copy, n).shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"prunable in copy but not in trained: {missing}")
        if unexpected:
            parts.append(f"prunable in trained but not in copy: {unexpected}")
        if shapes:
            parts.append(f"shapes that differ: {shapes}")
        raise ValueError(f"trained ({type(trained).__name__}) and copy ({type(copy).__name__}) do not match; "
                         + "; ".join(parts))


def winning_ticket(trained: nn.Module, copy: nn.Module, amount: int | float, *,
                   scope: Literal["layer", "global"] = "layer", include: Patterns = None,
                   exclude: Patterns = None, types: Types = None) -> tuple[nn.Module, Mask]:
    """Prune ``copy`` in place by the magnitudes of ``trained``'s weights; return ``(copy, mask)``.

    The lottery ticket step (paper Sec. 1, steps 3-4): ``trained`` is the network after training,
    ``copy`` holds the initial weights theta0 (e.g. a deep copy taken before training). In each
    prunable parameter (``scope="layer"``) or across all of them (``scope="global"``) the weights
    with the smallest ``|trained weight|`` are pruned from ``copy`` with torch.nn.utils.prune
    (``copy`` gets ``<name>_orig`` and ``<name>_mask``); the kept weights keep ``copy``'s values.

    ``amount`` has torch's meaning: a float in [0, 1] is the fraction of the surviving weights to
    prune (rounded half to even), an int the number. The mask equals, element by element, the one
    ``prune.l1_unstructured`` (layer) or ``prune.global_unstructured(...,
    pruning_method=prune.L1Unstructured)`` (global) would give on ``trained``, up to the order in
    which exactly equal magnitudes are pruned (lth: lower flat index first; torch: unspecified).

    If ``copy`` is already pruned by torch.nn.utils.prune, pruning happens among its survivors and
    ``amount`` refers to them, as torch's PruningContainer does; ``trained`` may be pruned too (its
    masked weights are the scores). The prunable parameters are chosen on ``copy`` by
    :func:`lth.models.prunable_parameters` with ``include`` / ``exclude`` / ``types``; those of
    ``trained`` must have the same names and shapes, or a ValueError names each mismatch.
    The returned mask covers every chosen parameter (True = kept).

    >>> import copy as copy_module
    >>> net = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> theta0 = copy_module.deepcopy(net)
    >>> # ... train net ...
    >>> ticket, mask = winning_ticket(net, theta0, 0.5, scope="global")
    >>> sum(int(m.sum()) for m in mask.values())  # 40 weights, half pruned
    20
    >>> hasattr(ticket[0], "weight_orig")
    True
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    names = prunable_parameters(copy, include=include, exclude=exclude, types=types)
    if not names:
        raise ValueError(f"{type(copy).__name__} has no prunable parameter to prune")
    try:
        trained_names = prunable_parameters(trained, include=include, exclude=exclude, types=types)
    except ValueError as e:
        raise ValueError(f"trained ({type(trained).__name__}) does not match copy: {e}") from e
    _check_match(trained, copy, names, trained_names)

    # scores first: trained may be copy itself, whose weights the pruning below re-parametrises
    scores = score("magnitude", {n: get_tensor(trained, n).detach().clone() for n in names})
    carried = from_torch_prune(copy)
    current = {n: carried[n] if n in carried else torch.ones_like(get_tensor(copy, n), dtype=torch.bool)
               for n in names}
    if scope == "layer":
        keep = {}
        for n in names:
            alive = int(current[n].sum())
            keep[n] = alive - count_from_amount(amount, alive)
        mask = select_layerwise(scores, current, keep)
    else:
        alive = sum(int(current[n].sum()) for n in names)
        mask = select_global(scores, current, names, alive - count_from_amount(amount, alive))
    # masks only shrink, so torch's combination of the old and the new mask is the new mask
    to_torch_prune(copy, mask)
    return copy, mask
