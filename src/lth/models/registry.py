"""Registry name -> nn.Module builder, and the checks that a model fits a data set's inputs.

A builder takes ``(input_shape, num_classes)`` and returns an nn.Module whose parameters are not yet
initialised by lth; :func:`lth.models.initialize` draws them from a seeded generator. Families
register themselves with :func:`register` when their module is imported.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

ModelBuilder = Callable[[tuple[int, ...], int], nn.Module]
MODELS: dict[str, ModelBuilder] = {}


class ModelError(ValueError):
    """Unknown model or a model that cannot take the data set's input shape."""


def register(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator adding a builder to :data:`MODELS` under ``name``.

    >>> import math
    >>> from lth.models import MLP
    >>> @register("tiny-mlp")
    ... def tiny_mlp(input_shape, num_classes):
    ...     return MLP(math.prod(input_shape), (32,), num_classes)
    >>> build_model("tiny-mlp", (1, 8, 8), 10).out.weight.shape
    torch.Size([10, 32])
    >>> del MODELS["tiny-mlp"]  # leave the registry as the example found it
    """

    def deco(fn: ModelBuilder) -> ModelBuilder:
        if name in MODELS:
            raise RuntimeError(f"model {name!r} registered twice")
        MODELS[name] = fn
        return fn

    return deco


def model_names() -> list[str]:
    """Registered model names, sorted.

    >>> "lenet300" in model_names() and "resnet20" in model_names()
    True
    """
    return sorted(MODELS)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build an *uninitialised-by-us* model; call :func:`initialize` with a seeded generator.

    An unknown name, or an input shape the architecture cannot take, is a :class:`ModelError`
    naming the model (and, for unknown names, listing the valid ones).

    >>> build_model("conv2", (3, 32, 32), 10).out.weight.shape
    torch.Size([10, 256])
    """
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; valid models: {', '.join(model_names())}")
    try:
        return MODELS[name](tuple(input_shape), num_classes)
    except ModelError as e:
        raise ModelError(f"model {name!r}: {e}") from e
    except Exception as e:  # a shape that does not fit the architecture
        raise ModelError(
            f"model {name!r} cannot take inputs of shape {tuple(input_shape)}: {e}"
        ) from e


def check_fit(name: str, input_shape: tuple[int, ...], num_classes: int, dataset: str = "") -> None:
    """Build the model and push one example through it, so a data set whose input shape does not
    fit the architecture fails before any training, with a message naming both.

    >>> check_fit("lenet300", (1, 28, 28), 10, dataset="mnist")
    >>> check_fit("vgg19", (3, 8, 8), 10, dataset="tiny")
    Traceback (most recent call last):
    ...
    lth.models.registry.ModelError: model 'vgg19': input (3, 8, 8) is too small for VGG's 4 2x2 max-pools ...
    """
    try:
        model = build_model(name, input_shape, num_classes)
    except ModelError as e:
        raise ModelError(f"{e} (inputs of data set {dataset or '?'}). Choose a model that fits, "
                         "e.g. lenet300 for any input.") from e
    try:
        with torch.no_grad():
            model.eval()
            out = model(torch.zeros(1, *input_shape))
    except Exception as e:
        raise ModelError(
            f"model {name!r} cannot take the inputs of data set {dataset or '?'} "
            f"(shape {tuple(input_shape)}): {e}. Choose a model that fits, e.g. lenet300 for any input."
        ) from e
    if tuple(out.shape) != (1, num_classes):
        raise ModelError(f"model {name!r} gives outputs of shape {tuple(out.shape)[1:]}, "
                         f"expected ({num_classes},) for data set {dataset or '?'}")
