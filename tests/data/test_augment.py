"""Tests for lth.data.augment: random crop from a zero-padded image and horizontal flip, as
seeded batch operations, checked against a slow per-image reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lth.config import AUGMENTATIONS
from lth.data.augment import CROP_PAD, augment, check_augment, crop_flip, draw_crop_flip, epoch_params
from lth.seeds import derive_seed


def reference_crop_flip(x: np.ndarray, params: np.ndarray, pad: int) -> np.ndarray:
    """One image at a time: pad with zeros, slice the crop, reverse the columns if flipped."""
    *lead, c, h, w = x.shape
    images = x.reshape(-1, c, h, w)
    rows = params.reshape(-1, 3)
    out = np.empty_like(images)
    for k in range(len(images)):
        padded = np.zeros((c, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
        padded[:, pad:pad + h, pad:pad + w] = images[k]
        dy, dx, flip = (int(v) for v in rows[k])
        crop = padded[:, dy:dy + h, dx:dx + w]
        out[k] = crop[:, :, ::-1] if flip else crop
    return out.reshape(x.shape)


@pytest.mark.parametrize(("shape", "pad"), [((6, 3, 32, 32), 4), ((2, 5, 1, 8, 8), 4), ((4, 2, 5, 7), 2),
                                            ((3, 1, 3, 3), 4), ((2, 3, 4, 4), 0)])
def test_crop_flip_equals_the_per_image_reference(shape, pad):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    params = draw_crop_flip(int(np.prod(shape[:-3])), g, pad).view(*shape[:-3], 3)
    before = x.clone()
    out = crop_flip(x, params, pad)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out.numpy(), reference_crop_flip(x.numpy(), params.numpy(), pad))
    assert torch.equal(x, before)  # pure: the input is untouched


def test_every_offset_and_flip_is_an_exact_shift_or_mirror():
    x = torch.arange(1, 2 * 8 * 8 + 1, dtype=torch.float32).view(1, 2, 8, 8)  # no pixel is 0
    for dy in range(2 * CROP_PAD + 1):
        for dx in range(2 * CROP_PAD + 1):
            for flip in (0, 1):
                out = crop_flip(x, torch.tensor([[dy, dx, flip]]))[0]
                shifted = torch.zeros_like(x[0])
                sy, sx = dy - CROP_PAD, dx - CROP_PAD  # the crop's origin in image coordinates
                src = x[0, :, max(sy, 0):8 + min(sy, 0), max(sx, 0):8 + min(sx, 0)]
                shifted[:, max(-sy, 0):8 - max(sy, 0), max(-sx, 0):8 - max(sx, 0)] = src
                want = shifted.flip(-1) if flip else shifted
                assert torch.equal(out, want), (dy, dx, flip)
    centre = torch.tensor([[CROP_PAD, CROP_PAD, 0], [CROP_PAD, CROP_PAD, 1]])
    two = x.expand(2, -1, -1, -1)
    out = crop_flip(two, centre)
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[0].flip(-1))


def test_a_full_shift_leaves_only_padding():
    x = torch.ones(1, 1, 4, 4)
    out = crop_flip(x, torch.tensor([[0, 0, 0]]), pad=4)  # the crop is entirely padding
    assert torch.count_nonzero(out) == 0


def test_draws_cover_all_81_offsets_and_both_flips_uniformly():
    g = torch.Generator().manual_seed(1)
    n = 81 * 400
    p = draw_crop_flip(n, g)
    assert p.shape == (n, 3) and p.dtype == torch.int64
    assert int(p[:, :2].min()) == 0 and int(p[:, :2].max()) == 2 * CROP_PAD
    counts = torch.bincount(p[:, 0] * 9 + p[:, 1], minlength=81)
    assert counts.numel() == 81 and int(counts.min()) > 0
    # chi-square with 80 degrees of freedom: the 99.99% quantile is about 136
    chi2 = float(((counts.double() - 400) ** 2 / 400).sum())
    assert chi2 < 136, chi2
    flips = torch.bincount(p[:, 2], minlength=2)
    assert flips.numel() == 2 and abs(int(flips[1]) - n / 2) < 4 * (n / 4) ** 0.5
    # offsets and flips vary per image, not per batch
    first = p[:64]
    assert len({tuple(r) for r in first[:, :2].tolist()}) > 20 and 0 < int(first[:, 2].sum()) < 64


def test_epoch_params_are_a_pure_function_of_seed_and_epoch():
    a = epoch_params("crop_flip", [3, 4], epoch=2, count=50, device="cpu")
    assert a.shape == (2, 50, 3)
    assert torch.equal(a, epoch_params("crop_flip", [3, 4], epoch=2, count=50, device="cpu"))
    # each unit's rows come from its own seed, whatever the group
    assert torch.equal(a[1], epoch_params("crop_flip", [4], epoch=2, count=50, device="cpu")[0])
    g = torch.Generator().manual_seed(derive_seed(3, "augment", 2))
    assert torch.equal(a[0], draw_crop_flip(50, g))
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a[0], epoch_params("crop_flip", [3], epoch=3, count=50, device="cpu")[0])
    assert epoch_params("none", [3, 4], epoch=2, count=50, device="cpu") is None


def test_same_parameters_same_output_different_parameters_different_output():
    x = torch.randn(2, 16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    p = epoch_params("crop_flip", [0, 1], epoch=0, count=16, device="cpu")
    q = epoch_params("crop_flip", [0, 1], epoch=1, count=16, device="cpu")
    assert torch.equal(augment(x, p, "crop_flip"), augment(x.clone(), p.clone(), "crop_flip"))
    assert not torch.equal(augment(x, p, "crop_flip"), augment(x, q, "crop_flip"))
    assert augment(x, None, "none") is x


def test_unknown_names_and_bad_shapes_are_refused():
    assert AUGMENTATIONS == ("none", "crop_flip")
    for name in AUGMENTATIONS:
        check_augment(name)
    with pytest.raises(ValueError, match="'crop'.*none, crop_flip"):
        check_augment("crop")
    with pytest.raises(ValueError, match=r"\[\.\.\., C, H, W\]"):
        crop_flip(torch.zeros(4, 64), torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected \(4, 3\)"):
        crop_flip(torch.zeros(4, 1, 8, 8), torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="needs parameters"):
        augment(torch.zeros(4, 1, 8, 8), None, "crop_flip")
