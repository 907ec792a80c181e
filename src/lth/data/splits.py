"""Train/validation/test tensors: the public loader :func:`load_splits` and the split it uses.

Every supported data set is small enough to live entirely in memory, so :func:`load_splits`
returns plain tensors (already normalized and on the requested device) instead of
``DataLoader`` objects: training loops then batch by indexing, which is faster than per-sample
Python datasets and makes runs exactly reproducible.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DataError
from .paths import resolve_root
from .registry import DatasetSpec, RawData, dataset_info


@dataclass(frozen=True, eq=False, repr=False)
class Splits:
    """Train/validation/test tensors of one data set, normalized and on one device.

    ``eq=False`` on purpose: comparing tensors with ``==`` is elementwise, so a generated
    ``__eq__`` would raise; compare fields with ``torch.equal`` instead.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]

    def __repr__(self) -> str:  # the default repr would print tensor contents
        return (
            f"Splits(name={self.name!r}, train={tuple(self.train_x.shape)}, "
            f"val={tuple(self.val_x.shape)}, test={tuple(self.test_x.shape)}, "
            f"num_classes={self.num_classes}, device={self.train_x.device})"
        )


def split_indices(n: int, val_size: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Partition ``range(n)`` into sorted (train, validation) index tensors.

    The validation indices are the first ``val_size`` entries of
    ``torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))``; both index sets
    are returned sorted so the kept training data stays in file order. Deterministic for a given
    seed, disjoint, and exactly sized.

    Raises:
        DataError: ``val_size`` not an int in ``0 .. n - 1``.
    """
    if isinstance(val_size, bool) or not isinstance(val_size, (int, np.integer)):
        raise DataError(f"val_size must be an integer, got {val_size!r}")
    if not 0 <= val_size < n:
        raise DataError(
            f"data.val_size = {val_size} is out of range: the training set has {n} examples, so "
            f"data.val_size must be between 0 and {n - 1} (inclusive)"
        )
    gen = torch.Generator().manual_seed(int(split_seed))
    perm = torch.randperm(n, generator=gen)
    val_idx = perm[:val_size].sort().values
    train_idx = perm[val_size:].sort().values
    return train_idx, val_idx


def _validate(spec: DatasetSpec, raw: RawData) -> None:
    """Check counts, image shapes and label ranges of raw data before any tensor is built."""
    for what, x, y, src in (
        ("training", raw.train_x, raw.train_y, raw.train_source),
        ("test", raw.test_x, raw.test_y, raw.test_source),
    ):
        if len(x) != len(y):
            raise DataError(
                f"{spec.name} {what} data ({src}): {len(x)} images but {len(y)} labels; the "
                "files do not belong together or one is corrupt"
            )
        if tuple(x.shape[1:]) != spec.input_shape:
            raise DataError(
                f"{spec.name} {what} data ({src}): images have shape {tuple(x.shape[1:])}, "
                f"expected {spec.input_shape}"
            )
        if len(y) == 0:
            raise DataError(f"{spec.name} {what} data ({src}) is empty")
        bad = np.flatnonzero((y < 0) | (y >= spec.num_classes))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"{spec.name} {what} data ({src}): label {int(y[i])} at index {i} is outside "
                f"0..{spec.num_classes - 1} ({bad.size} bad labels in total); the label file is "
                "corrupt or belongs to another data set"
            )


def _to_tensor(spec: DatasetSpec, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images -> float32 on ``device``, scaled to [0, 1], then per-channel standardized.

    The uint8 tensor is moved before conversion so a host-to-GPU copy moves 4x fewer bytes.
    """
    out = x.to(device).to(torch.float32).div_(spec.pixel_scale)
    shape = (1, -1) + (1,) * (out.dim() - 2)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(shape)
    std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(shape)
    return out.sub_(mean).div_(std)


def load_splits(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    val_size: int,
    split_seed: int,
    device: str | torch.device = "cpu",
    download: bool = True,
) -> Splits:
    """Load a data set as normalized train/validation/test tensors on ``device``.

    The validation set is carved from the official training set by :func:`split_indices`
    (``torch.Generator().manual_seed(split_seed)``), so experiments that share ``split_seed``
    share a split, and the official test set is never touched for model selection.

    Args:
        name: a key of :data:`~lth.data.DATASETS` (see :func:`~lth.data.dataset_names`).
        data_dir: data root (see :func:`~lth.data.resolve_data_dir`); ignored by ``digits``.
        val_size: validation examples, ``0 <= val_size < len(train)``; 0 gives empty tensors.
            ``dataset_info(name).default_val_size`` is the recommended value.
        split_seed: seed of the train/validation split.
        device: where the returned tensors live.
        download: allow fetching missing files from the public mirrors.

    Raises:
        DataError: unknown name, missing/corrupt files, bad labels, or out-of-range ``val_size``.
    """
    spec = dataset_info(name)
    if isinstance(val_size, (int, np.integer)) and not isinstance(val_size, bool) and val_size < 0:
        raise DataError(f"data.val_size = {val_size} is out of range: it must be >= 0")
    root = resolve_root(data_dir) if spec.needs_data_dir else None
    raw = spec.loader(spec, root, download)
    _validate(spec, raw)
    dev = torch.device(device)

    train_idx, val_idx = split_indices(len(raw.train_y), val_size, split_seed)
    full_x = torch.from_numpy(raw.train_x)
    full_y = torch.from_numpy(raw.train_y.astype(np.int64, copy=False))
    # Indexing copies, so the normalization below never writes into the numpy arrays.
    return Splits(
        name=spec.name,
        train_x=_to_tensor(spec, full_x[train_idx], dev),
        train_y=full_y[train_idx].to(dev),
        val_x=_to_tensor(spec, full_x[val_idx], dev),
        val_y=full_y[val_idx].to(dev),
        test_x=_to_tensor(spec, torch.from_numpy(raw.test_x), dev),
        test_y=torch.from_numpy(raw.test_y.astype(np.int64)).to(dev),
        num_classes=spec.num_classes,
        input_shape=spec.input_shape,
    )
