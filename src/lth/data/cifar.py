"""CIFAR-10, binary version: five training batches and one test batch of fixed-size records.

CIFAR-10 is only published as an archive; its official MD5 is known but per-``.bin`` hashes are
not, and none are invented here. The archive checksum is therefore enforced whenever an archive
is downloaded or found, while loose ``.bin`` files get structural checks only (record size here,
label range in :mod:`lth.data.splits`). This is also what lets tests use tiny hand-written CIFAR
files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .download import download_verified, missing_files_error
from .errors import DataError
from .paths import DataRoot
from .registry import ArchiveSpec, DatasetSpec, FileSpec, RawData, register

_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST_FILE = "test_batch.bin"
_CIFAR_RECORD = 1 + 3 * 32 * 32


def _read_cifar_batches(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 binary batches: records of 1 label byte + R, G, B planes of 32x32 bytes.

    Because the pixel bytes are already planar (channel, row, column), a reshape gives NCHW
    without any transposition.
    """
    chunks = []
    for p in paths:
        try:
            raw = np.fromfile(p, dtype=np.uint8)
        except OSError as e:
            raise DataError(f"{p}: cannot read file ({e})") from None
        if raw.size == 0 or raw.size % _CIFAR_RECORD:
            raise DataError(
                f"{p}: size {raw.size} bytes is not a positive multiple of the "
                f"{_CIFAR_RECORD}-byte CIFAR-10 record (1 label byte + 3072 pixel bytes): the file "
                f"is truncated or not a CIFAR-10 binary batch (the last record has "
                f"{raw.size % _CIFAR_RECORD} bytes). Delete it and extract/download it again."
            )
        chunks.append(raw.reshape(-1, _CIFAR_RECORD))
    records = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    labels = records[:, 0].copy()
    images = np.ascontiguousarray(records[:, 1:]).reshape(-1, 3, 32, 32)
    return images, labels


def _extract_cifar(archive: Path, spec: ArchiveSpec, dest_dir: Path) -> None:
    """Verify and extract only the expected ``.bin`` members (never arbitrary archive paths)."""
    if spec.md5 is not None:
        digest = hashlib.md5(usedforsecurity=False)
        with open(archive, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != spec.md5:
            raise DataError(
                f"{archive}: checksum mismatch, the archive is corrupt or incomplete: expected "
                f"MD5 {spec.md5}, got {digest.hexdigest()}. Delete it and download it again."
            )
    wanted = {spec.member_prefix + n: n for n in (*_CIFAR_TRAIN_FILES, _CIFAR_TEST_FILE)}
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            seen = set()
            for member in tar:
                if member.name in wanted and member.isfile():
                    src = tar.extractfile(member)
                    assert src is not None
                    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, suffix=".part")
                    try:
                        with os.fdopen(fd, "wb") as out:
                            shutil.copyfileobj(src, out, 1 << 20)
                        os.replace(tmp_name, dest_dir / wanted[member.name])
                    finally:
                        Path(tmp_name).unlink(missing_ok=True)
                    seen.add(member.name)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{archive}: cannot extract ({e}); the archive is corrupt. Delete it and download "
            "it again."
        ) from None
    if len(seen) != len(wanted):
        absent = sorted(set(wanted) - seen)
        raise DataError(f"{archive}: archive lacks the members {absent}; it is not {spec.filename}")


def load_cifar10(spec: DatasetSpec, root: DataRoot | None, download: bool) -> RawData:
    """Loader for CIFAR-10's binary version.

    Looks for the six ``.bin`` files in ``<root>/cifar-10/cifar-10-batches-bin/`` then in
    ``<root>/cifar-10/``. If neither is complete, an official archive found in
    ``<root>/cifar-10/`` (or downloaded there) is MD5-verified and extracted into
    ``cifar-10-batches-bin/``; a downloaded archive is deleted after extraction.
    """
    assert root is not None and spec.archive is not None
    base = root.path / spec.name
    batch_dir = base / spec.archive.member_prefix.rstrip("/")
    names = (*_CIFAR_TRAIN_FILES, _CIFAR_TEST_FILE)
    candidates = (batch_dir, base)

    def complete(d: Path) -> bool:
        return all((d / n).is_file() for n in names)

    folder = next((d for d in candidates if complete(d)), None)
    errors: list[str] = []
    if folder is None:
        archive = base / spec.archive.filename
        if archive.is_file():
            _extract_cifar(archive, spec.archive, batch_dir)
            folder = batch_dir
        elif download:

            def verify(tmp: Path) -> None:
                _extract_cifar(tmp, spec.archive, batch_dir)  # type: ignore[arg-type]

            errors = download_verified(spec.archive.urls, archive, verify)
            archive.unlink(missing_ok=True)  # the extracted .bin files are all we need
            if not errors:
                folder = batch_dir
    if folder is None:
        present = max(candidates, key=lambda d: sum((d / n).is_file() for n in names))
        missing = [n for n in names if not (present / n).is_file()]
        note = f"Alternatively put the official {spec.archive.filename} into {base}/."
        raise missing_files_error(spec, root, missing, candidates, download, errors, note)

    train_paths = [folder / n for n in _CIFAR_TRAIN_FILES]
    test_path = folder / _CIFAR_TEST_FILE
    trx, try_ = _read_cifar_batches(train_paths)
    tex, tey = _read_cifar_batches([test_path])
    return RawData(trx, try_, tex, tey, f"{folder}/data_batch_*.bin", str(test_path))


register(
    DatasetSpec(
        name="cifar-10",
        input_shape=(3, 32, 32),
        num_classes=10,
        default_val_size=5000,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        pixel_scale=255.0,
        loader=load_cifar10,
        # Per-.bin hashes are not known; integrity comes from the archive MD5.
        files=tuple(FileSpec(n) for n in (*_CIFAR_TRAIN_FILES, _CIFAR_TEST_FILE)),
        archive=ArchiveSpec(
            filename="cifar-10-binary.tar.gz",
            urls=("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
            md5="c32a1d4ab5d03f1284b67883e8d87530",
            member_prefix="cifar-10-batches-bin/",
        ),
        description="CIFAR-10 32x32 RGB: 50000 train / 10000 test (binary version)",
    ),
    aliases=("cifar10",),
)
