"""Data sets for lottery-ticket experiments: locating, verifying, parsing and splitting.

``load_splits(name, data_dir, val_size=..., split_seed=...)`` returns normalized
train/validation/test tensors on a device; everything else here serves it. All user-facing
problems raise :class:`DataError`, whose message names the file, the problem and the fix.
Importing does no work: nothing is read and scikit-learn is imported only to load ``digits``.

Modules, lowest first:

* :mod:`~lth.data.errors`: :class:`DataError`.
* :mod:`~lth.data.paths`: the data root (``--data-dir``, ``$LTH_DATA``, the user cache) and its
  layout.
* :mod:`~lth.data.registry`: :class:`DatasetSpec` and the registry of data sets; the checksum
  policy.
* :mod:`~lth.data.download`: verified downloads and the "files missing" message.
* :mod:`~lth.data.idx`: the IDX format (:func:`read_idx`).
* :mod:`~lth.data.digits`, :mod:`~lth.data.mnist`, :mod:`~lth.data.cifar`: one loader and its
  registration per data-set family.
* :mod:`~lth.data.splits`: :class:`Splits`, :func:`split_indices`, :func:`load_splits`.
* :mod:`~lth.data.augment`: training-batch augmentation (random crop and flip) as seeded tensor
  operations on the device; the training loop applies it.
"""

from __future__ import annotations

# The data-set modules register themselves on import; this order is the order of
# dataset_names() and of the names listed in an "unknown data set" message, hence no sorting.
# isort: off
from . import digits, mnist, cifar  # noqa: F401
# isort: on
from .errors import DataError
from .idx import read_idx
from .paths import resolve_data_dir
from .registry import DATASETS, ArchiveSpec, DatasetSpec, FileSpec, dataset_info, dataset_names
from .splits import Splits, load_splits, split_indices

__all__ = [
    "DATASETS",
    "ArchiveSpec",
    "DataError",
    "DatasetSpec",
    "FileSpec",
    "Splits",
    "dataset_info",
    "dataset_names",
    "load_splits",
    "read_idx",
    "resolve_data_dir",
    "split_indices",
]
