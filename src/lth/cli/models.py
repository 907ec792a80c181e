"""``lth models``: every registered model's parameter counts for a data set's input shape.

The shapes come from the data registry (lth.data.dataset_info), so no data file is needed. Without
``--dataset`` each model is counted on the data set of its first preset (CIFAR-10 for the conv,
ResNet and VGG networks, MNIST for LeNet-300-100, digits for the 100-50 MLP).
"""

from __future__ import annotations

import argparse

COLUMNS = ("model", "data set", "input", "total", "prunable", "conv", "fc", "output", "dense")
LEGEND = ("prunable = conv + fc + output weights (the paper prunes these, never biases or BatchNorm);\n"
          "dense = weights the model never prunes (ResNet-20's 1x1 shortcuts); total = every parameter.\n"
          "Presets with global pruning (ResNet-20, VGG) also leave the output layer dense.")


def add_parser(subparsers) -> argparse.ArgumentParser:
    c = subparsers.add_parser(
        "models", help="list the registered models with their parameter counts",
        description="One row per registered model: total and prunable parameters, split into conv, fully "
                    "connected and output-layer weights, for a data set's input shape. " + LEGEND.replace("\n", " "))
    c.add_argument("--dataset", default=None, metavar="NAME",
                   help="count every model on this data set's input shape (default: each model's preset's)")
    return c


def _preset_datasets() -> dict[str, str]:
    """Model name -> the data set of the first preset that trains it."""
    from ..config import PRESETS

    out: dict[str, str] = {}
    for preset in PRESETS.values():
        out.setdefault(preset.config.model.name, preset.config.data.dataset)
    return out


def _spec(name: str):
    from ..config import ConfigError
    from ..data import DataError, dataset_info

    try:
        return dataset_info(name)
    except DataError as e:  # on this command a data-set name is a command-line argument
        raise ConfigError(f"--dataset: {e}") from None


def rows(dataset: str | None = None) -> list[tuple[str, ...]]:
    """The table's rows (strings), one per registered model, in registration order."""
    from ..models import MODELS, ModelError, build_model, parameter_counts

    defaults = _preset_datasets()
    chosen = _spec(dataset) if dataset is not None else None
    out = []
    for name in MODELS:
        spec = chosen
        if spec is None:
            if name not in defaults:
                out.append((name, "-", "-", "no preset trains this model: pass --dataset NAME"))
                continue
            spec = _spec(defaults[name])
        shape = "x".join(map(str, spec.input_shape))
        try:
            c = parameter_counts(build_model(name, spec.input_shape, spec.num_classes))
        except ModelError as e:
            reason = str(e).removeprefix(f"model {name!r}: ")
            out.append((name, spec.name, shape, f"does not fit: {reason}"))
            continue
        out.append((name, spec.name, shape, *(f"{n:,}" for n in (c.total, c.prunable, c.conv, c.fc, c.output,
                                                                   c.never_pruned))))
    return out


def _line(row: tuple[str, ...], widths: list[int]) -> str:
    """Names left-aligned, counts right-aligned; a row that ends in a note prints it after the input."""
    cells = [c.ljust(widths[i]) if i < 3 else c.rjust(widths[i]) for i, c in enumerate(row[:len(COLUMNS)])]
    if len(row) < len(COLUMNS):
        cells[-1] = row[-1]
    return "  ".join(cells).rstrip()


def run(args: argparse.Namespace) -> int:
    table = [COLUMNS, *rows(args.dataset)]
    widths = [max(len(r[i]) for r in table if len(r) == len(COLUMNS)) for i in range(len(COLUMNS))]
    for r in table:
        print(_line(r, widths))
    print(LEGEND)
    return 0
