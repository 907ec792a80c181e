"""lth.tickets.masks: the bitmap and index-list encodings of a mask, and the choice between them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lth.tickets import ExportError, TicketFormatError
from lth.tickets.masks import choose_mask_format, decode_mask, encode_mask, index_dtype, mask_bytes


@settings(max_examples=60, deadline=None)
@given(shape=st.sampled_from([(1,), (7,), (8,), (3, 5), (181, 181), (32769,), (2, 3, 3, 3)]),
       p=st.sampled_from([0.0, 0.01, 0.3, 0.9, 1.0]), seed=st.integers(0, 2**16))
def test_mask_codec_round_trips(shape, p, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=g) < p
    for fmt in ("bitmap", "indices"):
        enc = encode_mask(mask, fmt)
        assert torch.equal(decode_mask(fmt, enc, shape), mask)
        if fmt == "indices":
            assert enc.dtype == (torch.int16 if math.prod(shape) <= 2**15 else torch.int32)
        else:
            assert enc.numel() == (math.prod(shape) + 7) // 8


def test_bitmap_is_little_endian_row_major_and_indices_are_flat_positions():
    mask = torch.tensor([[True, False, False], [False, False, False], [False, False, True]])  # 9 bits
    bitmap = encode_mask(mask, "bitmap")
    assert bitmap.tolist() == [0b0000_0001, 0b0000_0001]  # element 0 -> bit 0 of byte 0, 8 -> byte 1
    assert encode_mask(mask, "indices").tolist() == [0, 8]
    ref = np.packbits(mask.numpy().reshape(-1), bitorder="little")
    assert np.array_equal(bitmap.numpy(), ref)


def test_index_dtype_is_the_narrowest_that_holds_every_position():
    assert [index_dtype(n) for n in (1, 2**15, 2**15 + 1, 2**31, 2**31 + 1)] == [
        torch.int16, torch.int16, torch.int32, torch.int32, torch.int64]


@pytest.mark.parametrize("numel, nnz, want", [
    (6400, 6400, "dense"),      # every weight kept: no mask at all
    (6400, 399, "indices"),     # 798 bytes of int16 < 800 bytes of bitmap
    (6400, 400, "bitmap"),      # a tie goes to the bitmap
    (6400, 401, "bitmap"),
    (235200, 919, "indices"),   # int32 indices: 3676 < 29400 bytes
    (235200, 7350, "bitmap"),   # 3.125% with int32 indices is the crossover: 29400 = 29400
    (10, 0, "indices"),         # nothing kept: an empty list
])
def test_auto_picks_the_smaller_encoding(numel, nnz, want):
    assert choose_mask_format(numel, nnz, "auto") == want
    if want != "dense":
        other = {"bitmap": "indices", "indices": "bitmap"}[want]
        assert mask_bytes(numel, nnz, want) <= mask_bytes(numel, nnz, other)
    assert choose_mask_format(numel, nnz, "bitmap") == "bitmap"
    assert choose_mask_format(numel, nnz, "indices") == "indices"


def test_decode_rejects_data_that_is_not_a_mask_of_the_shape():
    shape = (3, 3)
    with pytest.raises(TicketFormatError, match="layer w: bitmap must be 2 uint8 bytes, got 3"):
        decode_mask("bitmap", torch.zeros(3, dtype=torch.uint8), shape, "w")
    with pytest.raises(TicketFormatError, match="pad bits are not zero"):
        decode_mask("bitmap", torch.tensor([0, 0b10], dtype=torch.uint8), shape, "w")
    with pytest.raises(TicketFormatError, match="strictly increasing"):
        decode_mask("indices", torch.tensor([3, 1], dtype=torch.int16), shape, "w")
    with pytest.raises(TicketFormatError, match=r"strictly increasing in \[0, 9\)"):
        decode_mask("indices", torch.tensor([9], dtype=torch.int16), shape, "w")
    with pytest.raises(TicketFormatError, match="indices of a layer of 9 weights must be torch.int16, got torch.float"):
        decode_mask("indices", torch.tensor([1.0]), shape, "w")
    with pytest.raises(TicketFormatError, match="must be torch.int16, got torch.int64"):  # not the narrowest
        decode_mask("indices", torch.tensor([1]), shape, "w")
    with pytest.raises(TicketFormatError, match="the bitmap mask tensor is missing"):
        decode_mask("bitmap", None, shape, "w")
    with pytest.raises(TicketFormatError, match="unknown mask format 'csr'"):
        decode_mask("csr", torch.zeros(1), shape, "w")
    assert bool(decode_mask("dense", None, shape).all())
    with pytest.raises(ExportError, match="unknown mask format 'csr'"):
        encode_mask(torch.ones(3, dtype=torch.bool), "csr")
