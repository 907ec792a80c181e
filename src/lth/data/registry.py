"""The data-set registry: what is known about each data set, and how to look one up.

A data set is one :class:`DatasetSpec` (shape, classes, normalization, files and their checksums,
where to download them, and the loader that turns files into :class:`RawData`), added with
:func:`register` by the module that implements its loader.

Integrity policy: a checksum is enforced exactly when the spec knows it (``FileSpec.sha256`` /
``ArchiveSpec.md5`` not ``None``). No hash is ever invented: where the publisher gives none for a
file, only structural checks apply (record size, label range).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .errors import DataError
from .paths import DataRoot


@dataclass(frozen=True)
class FileSpec:
    """One required file of a data set.

    ``name`` is the canonical *uncompressed* file name; for IDX files a ``name + ".gz"`` copy is
    accepted too. ``sha256`` is the hash of the uncompressed content, or ``None`` when no
    trustworthy hash is known (then only structural checks apply).
    """

    name: str
    sha256: str | None = None


@dataclass(frozen=True)
class ArchiveSpec:
    """A downloadable archive that contains a data set's files (used for CIFAR-10)."""

    filename: str
    urls: tuple[str, ...]
    md5: str | None
    #: Path prefix of the members inside the archive (e.g. ``"cifar-10-batches-bin/"``).
    member_prefix: str


class RawData(NamedTuple):
    """Unnormalized data as loaded from disk: uint8 images (N, C, H, W), integer labels (N,)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    #: Descriptions (usually file paths) used in validation messages.
    train_source: str
    test_source: str


#: Signature of a data set's loader: (spec, root or None, download allowed) -> raw arrays.
#: The root is ``None`` exactly for specs with ``needs_data_dir=False``.
Loader = Callable[["DatasetSpec", "DataRoot | None", bool], RawData]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything known about one data set.

    Attributes:
        name: registry key, also ``Splits.name``.
        input_shape: shape of one image, channels first.
        num_classes: labels must lie in ``0 .. num_classes - 1``.
        default_val_size: recommended validation size (taken from the training set).
        mean, std: per-channel normalization constants applied after scaling to [0, 1].
        pixel_scale: raw pixel values are divided by this to land in [0, 1] (255, or 16 for digits).
        files: required files (in their canonical, uncompressed names) with known hashes.
        mirrors: base URLs; a file is fetched from ``mirror + name + ".gz"`` (IDX data sets).
        archive: archive to fetch instead of single files (CIFAR-10).
        needs_data_dir: ``False`` for data sets bundled with a library (digits).
        loader: function producing the raw arrays; see :data:`Loader`.
        description: one line for listings.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    default_val_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixel_scale: float
    loader: Loader = field(repr=False)
    files: tuple[FileSpec, ...] = ()
    mirrors: tuple[str, ...] = ()
    archive: ArchiveSpec | None = None
    needs_data_dir: bool = True
    description: str = ""


#: Registered data sets by canonical name, in registration order.
DATASETS: dict[str, DatasetSpec] = {}

# Alternative spellings, keyed by the name lowercased with "-" and "_" removed, so that one entry
# covers "cifar10", "CIFAR_10" and "cifar-10" alike.
_ALIASES: dict[str, str] = {}


def _squash(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def register(spec: DatasetSpec, aliases: tuple[str, ...] = ()) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` under ``spec.name``, plus alternative spellings.

    Called once per data set by the module holding its loader. Only builds dictionary entries,
    so registering at import time costs nothing.

    Raises:
        ValueError: the name or an alias is taken already (a programming error, not user input).
    """
    if spec.name in DATASETS:
        raise ValueError(f"data set {spec.name!r} is registered twice")
    for alias in aliases:
        if _squash(alias) in _ALIASES:
            raise ValueError(f"alias {alias!r} of {spec.name!r} already names {_ALIASES[_squash(alias)]!r}")
    DATASETS[spec.name] = spec
    _ALIASES.update({_squash(alias): spec.name for alias in aliases})
    return spec


def dataset_names() -> list[str]:
    """Names of all registered data sets, in registration order."""
    return list(DATASETS)


def dataset_info(name: str) -> DatasetSpec:
    """Return the spec of ``name`` (case-insensitive, ``_`` and ``-`` interchangeable).

    Raises:
        DataError: unknown name; the message lists the valid names.
    """
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key.replace("-", ""), key)
    try:
        return DATASETS[key]
    except KeyError:
        raise DataError(
            f"unknown data set {name!r}; valid names are: {', '.join(dataset_names())}"
        ) from None
