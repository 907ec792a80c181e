"""Export a lottery ticket as one genuinely sparse file, and load it back.

A ticket in a run directory is a dense ``final.pt`` plus a boolean ``mask.pt``: at 3.6% of the
weights remaining it still takes the dense network's bytes twice over. :func:`export_ticket`
writes only what survives into one safetensors file (layout: :mod:`lth.tickets.format`);
:func:`read_ticket` and :func:`load_ticket` turn such a file back into tensors or a model.

torch and the rest of the library are imported inside the functions: the command line imports
this package and must start without them.
"""

from __future__ import annotations

import errno
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import units as _units
from .errors import ExportError, TicketFormatError
from .format import (
    BITMAP_BIT_ORDER,
    DTYPES,
    FORMAT,
    FORMAT_VERSION,
    pack_state,
    parse_metadata,
    read_safetensors,
    seal,
    unpack_state,
)
from .masks import MASK_FORMATS

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "WEIGHTS",
    "ExportSize",
    "Ticket",
    "default_export_path",
    "dense_checkpoint_bytes",
    "export_size",
    "export_ticket",
    "load_ticket",
    "read_ticket",
]

#: ``final`` = the unit's trained weights; ``init`` = the weights it started training from.
WEIGHTS = ("final", "init")


def _check_choice(what: str, value: str, allowed: tuple[str, ...], flag: str) -> None:
    if value not in allowed:
        raise ExportError(f"{what} {value!r} is not supported; choose one of {', '.join(allowed)} "
                          f"(with {flag})")


def default_export_path(run_dir: Path | str, level: int, *, trial: int = 0, branch: str = "ticket",
                        weights: str = "final", dtype: str = "float32") -> Path:
    """``<run>/exports/trial<T>_level<L>_<branch>_<weights>_<dtype>.safetensors``."""
    return (Path(run_dir) / "exports"
            / f"trial{trial}_level{level}_{branch}_{weights}_{dtype}.safetensors")


def export_ticket(run_dir: Path | str, level: int, *, trial: int = 0, branch: str = "ticket",
                  weights: str = "final", dtype: str = "float32", mask_format: str = "auto",
                  out: Path | str | None = None) -> Path:
    """Write the ticket of (trial, level, branch) of a finished run as one sparse safetensors file.

    Args:
        run_dir: the run directory ``lth run`` made (``<out>/<name>-<hash>``).
        level: pruning level (0 = dense); must be finished for ``branch``.
        trial, branch: which unit (``ticket``, ``reinit``, ``random_mask``, ``oneshot``, ``finetune``, ``lr_rewind``).
        weights: ``"final"`` (trained weights) or ``"init"`` (the weights the unit started from,
            masked: the winning ticket's initialisation for ``branch="ticket"``).
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` for the stored values.
        mask_format: ``"auto"`` (smaller of the two per layer), ``"bitmap"`` or ``"indices"``.
        out: output file; default :func:`default_export_path`.

    Returns the path written (atomically, see :func:`write_file`). Raises :class:`ExportError`
    with the fix in the message; a destination that cannot become a file is refused before any
    work.
    """
    import lth

    from ..config import config_hash
    from ..models import build_model, prunable_parameters
    from ..pruning import density

    _check_choice("weights", weights, WEIGHTS, "--weights")
    _check_choice("dtype", dtype, DTYPES, "--dtype")
    _check_choice("mask format", mask_format, MASK_FORMATS, "--mask-format")
    if out is not None:
        check_destination(Path(out))
    unit = _units.resolve_unit(run_dir, int(level), int(trial), branch)
    cfg = unit.cfg
    input_shape, num_classes = _units.model_spec(cfg)

    def new_model() -> nn.Module:
        return build_model(cfg.model.name, input_shape, num_classes)

    model = new_model()
    mask = _units.unit_mask(unit, model)
    expected = dict(model.state_dict())
    state = _units.final_state(unit) if weights == "final" else _units.init_state(unit, new_model)
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise ExportError(f"the stored weights of {unit.dir} do not fit model {cfg.model.name!r} "
                          "built from the run's config.json; was the run directory edited?")
    unknown = [n for n in mask if n not in expected or mask[n].shape != expected[n].shape]
    if unknown:
        raise ExportError(f"the mask of {unit.dir} names weights the model lacks or shapes that "
                          f"differ: {', '.join(unknown)}")

    tensors, layers = pack_state(state, mask, dtype=dtype, mask_format=mask_format)
    meta = {
        "lth_format": FORMAT,
        "lth_format_version": FORMAT_VERSION,
        "lth_version": lth.__version__,
        "model": cfg.model.name,
        "dataset": cfg.data.dataset,
        "input_shape": json.dumps(list(input_shape)),
        "num_classes": str(num_classes),
        "level": str(unit.level),
        "trial": str(unit.trial),
        "branch": unit.branch,
        "weights": weights,
        "weights_remaining": repr(density(mask)),
        "config_hash": config_hash(cfg),
        "config": json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":")),
        "dtype": dtype,
        "bitmap_bit_order": BITMAP_BIT_ORDER,
        "mask_formats": json.dumps({n: layers[n]["mask_format"] for n in layers}),
        "layers": json.dumps(layers, separators=(",", ":")),
        "prunable": json.dumps(prunable_parameters(model)),
        "source_run_dir": printable(unit.run_dir.resolve()),
    }
    if weights == "final":
        for key in ("final_test_accuracy", "early_stop_test_accuracy"):
            if key in unit.result:
                meta[key] = repr(unit.result[key])
    where = dict(trial=unit.trial, branch=unit.branch, weights=weights, dtype=dtype)
    target = Path(out) if out is not None else default_export_path(unit.run_dir, unit.level, **where)
    if target.is_dir():
        raise ExportError(f"--out {target} is a directory; give a file name, e.g. "
                          f"{target / default_export_path('.', unit.level, **where).name}")
    check_destination(target)
    write_file(target, seal(tensors, meta))
    return target


# --------------------------------------------------------------------------- writing


def printable(path: Path | str) -> str:
    """``path`` as text that any UTF-8 writer accepts: a file name that is not valid UTF-8 (held
    by Python as lone surrogates) shows its stray bytes as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_destination(target: Path) -> None:
    """Refuse a destination whose folder cannot exist: a file where a folder of its path must be.
    Missing folders are fine (the writer creates them)."""
    for folder in target.parents:
        if folder.is_dir():
            return
        if folder.exists() or folder.is_symlink():
            raise ExportError(f"{folder} is a file, not a folder; choose another --out")


def _temporary(target: Path, pid: int) -> Path:
    return target.parent / f".{target.name}.{pid}.tmp"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete the ``.<name>.<pid>.tmp`` files that writers of ``target`` left when they were
    killed (their pid no longer exists); a live writer's file is left alone. Returns the removed."""
    prefix, removed = f".{target.name}.", []
    try:
        entries = os.listdir(target.parent)
    except OSError:
        return removed
    for name in entries:
        pid = name[len(prefix):-len(".tmp")] if name.startswith(prefix) and name.endswith(".tmp") else ""
        if not pid.isdigit() or int(pid) <= 0 or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:
            os.unlink(target.parent / name)
        except OSError:  # gone already, or not ours to delete: leave it
            continue
        removed.append(target.parent / name)
    return removed


def write_file(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically: through ``.<name>.<pid>.tmp`` beside it (fsync,
    rename), so a reader sees the old file or the new one, never a torn one. A writer killed
    mid-write leaves its temporary file behind; the next write of the same target deletes it
    (:func:`remove_stale_temporaries`). One writer per target per process.

    ``LTH_FAULT=during-write:<file name>:<n>`` kills the process halfway through the n-th write
    of that file name (the crash tests' hook, as for the run directory's files)."""
    from ..store.atomic import _fault_point, fsync_dir

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(e, target) from None
    remove_stale_temporaries(target)
    tmp = _temporary(target, os.getpid())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                half = len(data) // 2
                f.write(data[:half])
                f.flush()
                _fault_point("during-write", target)
                f.write(data[half:])
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as e:
        raise _write_error(e, target) from None
    fsync_dir(target.parent)


def _write_error(e: OSError, target: Path) -> ExportError:
    """The :class:`ExportError` for a failed write of ``target``; the run directory is only read."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ExportError(f"no space left on the device while writing {target}; nothing else was changed. "
                           "Free some space, or choose another --out")
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        try:
            check_destination(target)
        except ExportError as found:
            return found
    if e.errno == errno.EISDIR:
        return ExportError(f"--out {target} is a directory; give a file name ending in .safetensors")
    return ExportError(f"cannot write {target} ({e.strerror or e}); make its folder writable, or choose "
                       "another --out")


# --------------------------------------------------------------------------- reading


@dataclass
class Ticket:
    """A decoded ticket file.

    ``metadata``: the file's metadata with structured values parsed (ints, floats, lists, dicts);
    ``raw_metadata``: the strings as stored; ``masks``: ``{layer: bool tensor}``; ``state_dict``:
    dense tensors ready for ``load_state_dict`` (floating ones as float32, zeros where pruned);
    ``path``: the file it was read from (named in errors).
    """

    metadata: dict[str, Any]
    raw_metadata: dict[str, str]
    masks: dict[str, torch.Tensor]
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    path: Path | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.metadata["input_shape"])

    @property
    def num_classes(self) -> int:
        return int(self.metadata["num_classes"])

    def build_model(self) -> nn.Module:
        """The architecture named in the metadata, with the ticket's weights, in eval mode.

        The architecture is first built without memory (on torch's meta device) and its tensor
        names and shapes compared with the file's, so metadata that asks for a different (or a
        huge) network is a :class:`TicketFormatError` before anything is allocated."""
        import torch

        from ..models import ModelError, build_model

        source = self.path if self.path is not None else "the ticket"
        name = self.metadata["model"]
        try:
            with torch.device("meta"):
                shapes = {k: tuple(v.shape) for k, v in
                          build_model(name, self.input_shape, self.num_classes).state_dict().items()}
        except ModelError as e:
            raise ExportError(f"{source}: cannot rebuild the ticket's model: {e}") from None
        held = {k: tuple(v.shape) for k, v in self.state_dict.items()}
        if shapes != held:
            missing = sorted(set(shapes) - set(held))
            extra = sorted(set(held) - set(shapes))
            differ = [f"{k} {list(held[k])} (the model has {list(shapes[k])})"
                      for k in sorted(set(shapes) & set(held)) if shapes[k] != held[k]]
            raise TicketFormatError(
                f"{source}: the file's tensors do not fit model {name!r} with input_shape "
                f"{list(self.input_shape)} and num_classes {self.num_classes}: "
                + "; ".join(part for part in (missing and f"missing {', '.join(missing)}",
                                              extra and f"unexpected {', '.join(extra)}",
                                              differ and f"shape of {', '.join(differ)}") if part))
        model = build_model(name, self.input_shape, self.num_classes)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


def read_ticket(path: Path | str) -> Ticket:
    """Read a file written by :func:`export_ticket`: metadata, masks and the dense float32 state.

    Raises :class:`TicketFormatError` naming the file and the problem for a damaged file, a
    safetensors file that is not a ticket, another format version, or missing/garbled metadata.
    """
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a directory, not a ticket file; pass the .safetensors file `lth export` wrote")
    if not path.is_file():
        raise ExportError(f"ticket file {path} does not exist; create it with `lth export RUN_DIR --level L`")
    tensors, raw = read_safetensors(path)
    meta = parse_metadata(raw, str(path))
    masks, state = unpack_state(tensors, meta["layers"], str(path))
    return Ticket(meta, raw, masks, state, path)


def load_ticket(path: Path | str, *, sparse: bool | str = False, device: str = "cpu",
                threshold: float | None = None) -> nn.Module:
    """Rebuild the ticket's model (float32, zeros at pruned positions), ready for inference.

    Args:
        sparse: ``False``: plain dense module. ``"auto"``: Linear layers whose density is below
            ``threshold`` (default :data:`lth.tickets.sparse.DEFAULT_THRESHOLD`) become
            :class:`lth.tickets.sparse.SparseLinear`. ``True``: every Linear layer with at least
            one pruned weight becomes sparse (unless ``threshold``).
        device: where to put the module (the sparse kernels are CPU ones).
    """
    if sparse not in (False, True, "auto"):
        raise ExportError(f"sparse={sparse!r}: use False, True or 'auto'")
    ticket = read_ticket(path)
    model = ticket.build_model()
    if sparse:
        from .sparse import sparsify

        thr = threshold if threshold is not None else (1.0 if sparse is True else None)
        model = sparsify(model, thr, masks=ticket.masks, inplace=True)
    return model.to(device).eval()


# --------------------------------------------------------------------------- sizes


def dense_checkpoint_bytes(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Bytes of ``torch.save`` of the state dict with floating tensors as float32 (the usual
    dense checkpoint, like a run's ``final.pt``)."""
    import torch

    buf = io.BytesIO()
    torch.save({k: (v.float() if v.is_floating_point() else v) for k, v in state_dict.items()}, buf)
    return len(buf.getvalue())


@dataclass(frozen=True)
class ExportSize:
    """An exported file's bytes next to the dense float32 checkpoint's."""

    file_bytes: int
    dense_bytes: int

    @property
    def fraction(self) -> float:
        return self.file_bytes / self.dense_bytes

    def __str__(self) -> str:
        return (f"{self.file_bytes:,} bytes = {100 * self.fraction:.1f}% of the dense float32 "
                f"checkpoint ({self.dense_bytes:,} bytes)")


def export_size(path: Path | str) -> ExportSize:
    """Size of an exported ticket vs a dense float32 ``torch.save`` checkpoint of the same model."""
    ticket = read_ticket(path)
    return ExportSize(Path(path).stat().st_size, dense_checkpoint_bytes(ticket.build_model().state_dict()))
