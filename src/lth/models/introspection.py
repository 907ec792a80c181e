"""Which parameters of an nn.Module a mask covers, which one is the output layer, which are convs.

Works on any nn.Module, registered or not. The default prunable set is the ``weight`` of every
Linear and Conv1d/2d/3d module, minus the names a model lists in ``never_prune``: the paper prunes
the weights of fully connected and convolutional layers only (Sec. 2, App. B), so biases,
embeddings and normalisation layers stay dense unless a caller asks otherwise through ``include`` /
``exclude`` / ``types``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn

DEFAULT_PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

Patterns = str | Iterable[str] | None
Types = type[nn.Module] | Iterable[type[nn.Module]] | None


def _patterns(patterns: Patterns, what: str) -> list[str] | None:
    if patterns is None:
        return None
    # a bare string is one pattern, not an iterable of one-character patterns
    out = [patterns] if isinstance(patterns, str) else list(patterns)
    bad = [p for p in out if not isinstance(p, str)]
    if bad:
        raise TypeError(f"{what} patterns must be strings, got {bad!r}")
    return out


def _types(types: Types) -> tuple[type[nn.Module], ...]:
    if types is None:
        return DEFAULT_PRUNABLE_TYPES
    out = (types,) if isinstance(types, type) else tuple(types)
    bad = [t for t in out if not (isinstance(t, type) and issubclass(t, nn.Module))]
    if bad:
        raise TypeError(f"types must be nn.Module subclasses, got {bad!r}")
    return out


def _weight_names(model: nn.Module, types: tuple[type[nn.Module], ...]) -> list[str]:
    """``<module>.weight`` of every module of ``types`` that has a weight tensor, in module order.

    On a module pruned with torch.nn.utils.prune, ``weight`` is the masked tensor the pruning hook
    computes, so the name is the one of the unpruned module.
    """
    names = []
    for mod_name, mod in model.named_modules():
        if isinstance(mod, types) and isinstance(getattr(mod, "weight", None), torch.Tensor):
            names.append(f"{mod_name}.weight" if mod_name else "weight")
    return names


def _known_names(model: nn.Module, candidates: list[str]) -> list[str]:
    """Every name a pattern may sensibly refer to: parameters, plus unpruned names of pruned ones."""
    names = dict.fromkeys(n for n, _ in model.named_parameters())
    for n in list(names):
        if n.endswith("_orig"):
            names[n[: -len("_orig")]] = None
    names.update(dict.fromkeys(candidates))
    return list(names)


def _preview(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def prunable_parameters(model: nn.Module, *, include: Patterns = None, exclude: Patterns = None,
                        types: Types = None) -> list[str]:
    """Names of the weights a mask covers, in module order.

    Default: the ``weight`` of every Linear and Conv1d/2d/3d module; biases, embeddings and
    normalisation layers are never pruned (paper App. B). A model may declare ``never_prune``
    (parameter names, e.g. ResNet's 1x1 downsampling shortcuts) to keep layers dense.

    ``types`` replaces the module types whose ``weight`` is prunable. ``include`` (fnmatch-style
    patterns, ``*`` also matches dots) keeps only the names that match one of them; ``exclude``
    then drops the names that match one of its patterns. ``never_prune`` always applies; to prune
    such a layer, change the model's ``never_prune``. A pattern that matches no parameter of the
    model, or an include pattern that matches no prunable weight, is a ValueError naming it.

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    >>> prunable_parameters(net)
    ['1.weight', '3.weight']
    >>> prunable_parameters(net, exclude="3.*")
    ['1.weight']
    >>> prunable_parameters(net, types=(nn.Embedding, nn.Linear))
    ['0.weight', '1.weight', '3.weight']
    """
    inc, exc, kinds = _patterns(include, "include"), _patterns(exclude, "exclude"), _types(types)
    candidates = _weight_names(model, kinds)
    never = set(getattr(model, "never_prune", ()))
    names = [n for n in candidates if n not in never]
    if inc is None and exc is None:
        return names

    known = _known_names(model, candidates)
    unknown = [p for p in (inc or []) + (exc or []) if not any(fnmatchcase(n, p) for n in known)]
    if unknown:
        raise ValueError(f"name pattern(s) {unknown} match no parameter of {type(model).__name__}; "
                         f"its parameters: {_preview(known)}")
    if inc is not None:
        idle = [p for p in inc if not any(fnmatchcase(n, p) for n in names)]
        if idle:
            kinds_s = ", ".join(t.__name__ for t in kinds)
            raise ValueError(
                f"include pattern(s) {idle} match no prunable weight of {type(model).__name__} (the "
                f"weight of a {kinds_s} module, not in never_prune={sorted(never)}); "
                f"prunable weights: {_preview(names)}. Pass types=... to prune other module types."
            )
        names = [n for n in names if any(fnmatchcase(n, p) for p in inc)]
    if exc is not None:
        names = [n for n in names if not any(fnmatchcase(n, p) for p in exc)]
    return names


def get_tensor(model: nn.Module, name: str) -> torch.Tensor:
    """The tensor ``name`` resolves to as an attribute path (``getattr`` on the owning module).

    For an ordinary module this is the parameter itself; for a module pruned with
    torch.nn.utils.prune, ``<module>.weight`` is the masked weight the pruning hook computes.

    >>> net = nn.Sequential(nn.Linear(3, 2))
    >>> get_tensor(net, "0.weight") is net[0].weight
    True
    """
    owner, _, attr = name.rpartition(".")
    try:
        mod = model.get_submodule(owner)
    except AttributeError as e:
        raise KeyError(f"{type(model).__name__} has no module {owner!r} (for {name!r})") from e
    t = getattr(mod, attr, None)
    if not isinstance(t, torch.Tensor):
        raise KeyError(f"{type(model).__name__} has no tensor {name!r}")
    return t


def prunable_tensors(model: nn.Module, *, include: Patterns = None, exclude: Patterns = None,
                     types: Types = None) -> dict[str, torch.Tensor]:
    """``{name: parameter}`` for :func:`prunable_parameters` (what a dense mask is built over).

    The arguments are those of :func:`prunable_parameters`. On a module pruned with
    torch.nn.utils.prune the values are the masked weights, under the unpruned names.

    >>> from torch import nn
    >>> {n: tuple(p.shape) for n, p in prunable_tensors(nn.Sequential(nn.Linear(3, 2))).items()}
    {'0.weight': (2, 3)}
    """
    names = prunable_parameters(model, include=include, exclude=exclude, types=types)
    return {n: get_tensor(model, n) for n in names}


def output_parameter(model: nn.Module) -> str | None:
    """The output layer's weight (pruned at half rate by default): declared, else the last Linear.

    >>> output_parameter(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    '2.weight'
    """
    declared = getattr(model, "output_weight", None)
    if declared is not None:
        return declared
    last = None
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last = f"{mod_name}.weight" if mod_name else "weight"
    return last


def is_conv_parameter(model: nn.Module, name: str) -> bool:
    """Whether ``name`` belongs to a convolution (Conv-N prunes conv layers at their own rate).

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    >>> is_conv_parameter(net, "0.weight"), is_conv_parameter(net, "2.weight")
    (True, False)
    """
    mod = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    return isinstance(mod, CONV_TYPES)


@dataclass(frozen=True)
class ParameterCounts:
    """How a model's parameters split, by what pruning does with them (numbers of scalars).

    ``prunable = conv + fc + output`` (the weights :func:`prunable_parameters` lists);
    ``never_pruned`` are Linear/Conv weights the model keeps dense (its ``never_prune``, e.g.
    ResNet-20's 1x1 shortcuts); ``other`` is everything else (biases, normalisation layers), so
    ``total = prunable + never_pruned + other``. Whether the output layer is pruned is the
    experiment's choice (global pruning of ResNet-20/VGG leaves it dense), so it is counted apart.
    """

    total: int
    prunable: int
    conv: int
    fc: int
    output: int
    never_pruned: int
    other: int


def parameter_counts(model: nn.Module) -> ParameterCounts:
    """Count ``model``'s parameters by kind: conv / fc / output weights, kept-dense weights, other.

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 4), nn.Linear(4, 2))
    >>> parameter_counts(net)
    ParameterCounts(total=70, prunable=58, conv=18, fc=32, output=8, never_pruned=0, other=12)
    """
    params = dict(model.named_parameters())
    names = prunable_parameters(model)
    out_name = output_parameter(model)
    size = {n: get_tensor(model, n).numel() for n in names}
    output = size.get(out_name, 0) if out_name is not None else 0
    conv = sum(s for n, s in size.items() if n != out_name and is_conv_parameter(model, n))
    fc = sum(size.values()) - conv - output
    never = sum(get_tensor(model, n).numel() for n in getattr(model, "never_prune", ()))
    total = sum(p.numel() for p in params.values())
    return ParameterCounts(total=total, prunable=sum(size.values()), conv=conv, fc=fc, output=output,
                           never_pruned=never, other=total - sum(size.values()) - never)
