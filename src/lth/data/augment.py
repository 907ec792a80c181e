"""Training-set augmentation as seeded batch operations on the device.

``crop_flip`` is the augmentation of the paper's ResNet-20 and VGG-19 CIFAR-10 runs (Frankle &
Carbin 2019 Sec. 4, following He et al. 2016 Sec. 4.2): each training image is zero-padded by 4
pixels on every side, a crop of the original size is taken at a uniformly random offset (one of
``(2 * 4 + 1) ** 2 = 81``), and the crop is flipped horizontally with probability 1/2. Validation
and test images are never augmented.

Zero padding is applied to the *normalized* images (the tensors of :class:`~lth.data.Splits`), so
a padded pixel holds the data set's mean colour, as in He et al., where the per-pixel mean is
subtracted before padding. (torchvision's ``RandomCrop`` on raw images pads with black instead,
which is ``-mean / std`` after normalization.)

Randomness: the parameters (row offset, column offset, flip) of every batch slot of an epoch are
drawn at once on the CPU from ``derive_seed(data_seed, "augment", epoch)``, the same scheme as the
epoch's data order (:func:`lth.training.schedule.epoch_permutation`). So the augmentation of the
batch at iteration ``s`` is a pure function of the unit's data seed and ``s`` (with the batch
size and training-set size fixed by the configuration): a resumed run draws exactly what an
uninterrupted one drew, and the numbers do not depend on the device. Units that share a data seed
(those of one trial) share their augmentation, just as they share their data order.

Speed: no per-sample Python. One epoch's parameters go to the device in one copy (one host
synchronisation per epoch, as for the data order); each batch is then one padding and one
``gather`` whose per-sample indices fold in the crop offset and the flip. Any ``H x W`` works and
the padding is a parameter, so the 8x8 ``digits`` data set can be augmented too.

Functions:

* :func:`draw_crop_flip` -- parameters for ``count`` images from a generator;
* :func:`crop_flip` -- apply parameters to a batch (pure, on the batch's device);
* :func:`epoch_params` -- one epoch's parameters for N units, on the device;
* :func:`augment` -- apply an augmentation by name to an ``[N, B, C, H, W]`` batch;
* :func:`check_augment` -- reject an unknown name before any work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..config import AUGMENTATIONS
from ..seeds import derive_seed

__all__ = ["AUGMENTATIONS", "CROP_PAD", "augment", "check_augment", "crop_flip", "draw_crop_flip", "epoch_params"]

#: Padding of ``crop_flip`` on each side, in pixels (He et al. 2016 Sec. 4.2).
CROP_PAD = 4


def check_augment(kind: str) -> None:
    """Raise ``ValueError`` naming the valid choices unless ``kind`` is a known augmentation."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"data.augment = {kind!r}: unknown augmentation; choose one of {', '.join(AUGMENTATIONS)}")


def draw_crop_flip(count: int, generator: torch.Generator, pad: int = CROP_PAD) -> torch.Tensor:
    """Parameters of ``count`` random crops and flips: int64 ``[count, 3]`` on the generator's
    device, columns (row offset, column offset, flip), offsets uniform in ``0 .. 2 * pad`` (an
    offset of ``pad`` is the unshifted image), flip uniform in {0, 1}."""
    if pad < 0:
        raise ValueError(f"pad = {pad}: must be >= 0")
    offsets = torch.randint(0, 2 * pad + 1, (count, 2), generator=generator, device=generator.device)
    flips = torch.randint(0, 2, (count, 1), generator=generator, device=generator.device)
    return torch.cat([offsets, flips], dim=1)


def crop_flip(x: torch.Tensor, params: torch.Tensor, pad: int = CROP_PAD) -> torch.Tensor:
    """Crop every image of ``x`` from its ``pad``-pixel zero padding, then flip it horizontally
    where its flip flag is set.

    ``x`` has shape ``[..., C, H, W]`` and ``params`` ``[..., 3]`` with the same leading shape (one
    row per image, as from :func:`draw_crop_flip`). Output pixel ``(c, i, j)`` of an image with
    parameters ``(dy, dx, f)`` is ``padded[c, dy + i, dx + (W - 1 - j if f else j)]``, where
    ``padded`` is the image with ``pad`` zeros on every side. A pure function: ``x`` is not
    modified.
    """
    if x.dim() < 3:
        raise ValueError(f"crop_flip needs images shaped [..., C, H, W], got a tensor of shape {tuple(x.shape)}")
    *lead, c, h, w = x.shape
    if tuple(params.shape) != (*lead, 3):
        raise ValueError(f"params of shape {tuple(params.shape)} do not match images of shape {tuple(x.shape)}: "
                         f"expected {(*lead, 3)}")
    images = x.reshape(-1, c, h, w)
    p = params.reshape(-1, 3).to(device=x.device, dtype=torch.long)
    m = images.shape[0]
    hp, wp = h + 2 * pad, w + 2 * pad
    padded = F.pad(images, (pad, pad, pad, pad)).reshape(m, c, hp * wp)
    i = torch.arange(h, device=x.device)
    j = torch.arange(w, device=x.device)
    rows = p[:, 0:1] + i  # [M, H]
    cols = p[:, 1:2] + torch.where(p[:, 2:3] != 0, w - 1 - j, j)  # [M, W]: the flip is an index map
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(m, 1, h * w).expand(m, c, h * w)
    return padded.gather(2, flat).reshape(x.shape)


def epoch_params(kind: str, seeds: Sequence[int], epoch: int, count: int,
                 device: torch.device | str) -> torch.Tensor | None:
    """One epoch's augmentation parameters for N units: ``[N, count, k]`` on ``device``, unit
    ``n`` drawn from ``derive_seed(seeds[n], "augment", epoch)``; ``None`` for ``"none"``.

    ``count`` is the number of batch slots in the epoch (iterations per epoch x batch size); the
    batch at position ``pos`` of the epoch uses rows ``pos * B .. (pos + 1) * B``.
    """
    check_augment(kind)
    if kind == "none":
        return None
    drawn = [draw_crop_flip(count, torch.Generator().manual_seed(derive_seed(s, "augment", epoch)))
             for s in seeds]
    return torch.stack(drawn).to(device)


def augment(x: torch.Tensor, params: torch.Tensor | None, kind: str) -> torch.Tensor:
    """Apply augmentation ``kind`` to the images ``x`` (``[..., C, H, W]``) with ``params``
    (``[..., k]``, e.g. a batch's slice of :func:`epoch_params`); ``"none"`` returns ``x``."""
    check_augment(kind)
    if kind == "none":
        return x
    if params is None:
        raise ValueError(f"augmentation {kind!r} needs parameters (see epoch_params)")
    return crop_flip(x, params)
