"""The run directory: one per resolved configuration, written crash-safely, read strictly.

Knows nothing of training: it stores tensors, records and checkpoints at their places
(:mod:`.run`), writes every file atomically (:mod:`.atomic`), records and checks the digest of
every file it wrote (:mod:`.integrity`), types the per-unit record (:mod:`.records`) and lets one
writer at a time into a folder (:mod:`.lock`)."""

from .atomic import (
    DamagedFileError,
    StoreError,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    torch_load,
)
from .integrity import DigestCache, FileDigest
from .lock import LOCK, lock_folder, unlock_folder
from .records import UnitRecord
from .run import CHECKPOINT, CHECKSUMS, RESULT, RunStore, config_from_run

__all__ = ["CHECKPOINT", "CHECKSUMS", "LOCK", "RESULT", "DamagedFileError", "DigestCache", "FileDigest", "RunStore",
           "StoreError", "UnitRecord", "atomic_torch_save", "atomic_write_bytes", "atomic_write_json",
           "config_from_run", "lock_folder", "read_json", "torch_load", "unlock_folder"]
