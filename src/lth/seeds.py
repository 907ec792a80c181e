"""Seed derivation: every source of randomness gets its own seed from the base seed and a path.

``derive_seed(base, "init", trial)`` is a pure function, so any unit can be rerun alone and draw the
same numbers, and adding a branch or a trial never shifts another unit's randomness.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(base: int, *path: object) -> int:
    """A 63-bit seed from ``base`` and a path of names/numbers (stable across runs and machines)."""
    text = "/".join([str(int(base)), *map(str, path)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(base: int, *path: object) -> torch.Generator:
    """A CPU generator seeded with ``derive_seed(base, *path)``."""
    return torch.Generator().manual_seed(derive_seed(base, *path))
