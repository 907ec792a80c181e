"""The run directory: one per resolved configuration, written crash-safely, read strictly.

Knows nothing of training: it stores tensors, records and checkpoints at their places
(:mod:`.run`), writes every file atomically (:mod:`.atomic`) and types the per-unit record
(:mod:`.records`)."""

from .atomic import StoreError, atomic_torch_save, atomic_write_bytes, atomic_write_json, read_json, torch_load
from .records import UnitRecord
from .run import CHECKPOINT, RESULT, RunStore, config_from_run

__all__ = ["CHECKPOINT", "RESULT", "RunStore", "StoreError", "UnitRecord", "atomic_torch_save",
           "atomic_write_bytes", "atomic_write_json", "config_from_run", "read_json", "torch_load"]
