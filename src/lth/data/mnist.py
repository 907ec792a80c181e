"""MNIST and Fashion-MNIST: four IDX files each in ``<root>/<name>/``, downloadable one by one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .download import download_verified, missing_files_error
from .errors import DataError
from .idx import _read_maybe_gzip, read_idx
from .paths import DataRoot
from .registry import DatasetSpec, FileSpec, RawData, register

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# SHA-256 of the uncompressed files, in the order of _IDX_FILES.
_MNIST_SHA256 = (
    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
)
_FASHION_SHA256 = (
    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
)


def _find_idx(folder: Path, f: FileSpec) -> Path | None:
    """The file holding ``f``: ``<name>.gz`` or the uncompressed ``<name>``, or None if neither.

    A directory in the place of either is a :class:`DataError`, and so are both files present with
    different content: lth does not guess which copy is meant (the message says which one, if
    either, has the official checksum). Two copies of the same content are fine; the ``.gz`` is read.
    """
    gz, raw = folder / f"{f.name}.gz", folder / f.name
    for p, what in ((gz, "a gzipped IDX file"), (raw, "an IDX file")):
        if p.is_dir():
            raise DataError(f"{p} is a directory, expected {what}; remove it")
    present = [p for p in (gz, raw) if p.is_file()]
    if len(present) == 2:
        gz_data, raw_data = _read_maybe_gzip(gz), _read_maybe_gzip(raw)
        if gz_data != raw_data:
            official = [p for p, d in ((gz, gz_data), (raw, raw_data))
                        if f.sha256 and hashlib.sha256(d).hexdigest() == f.sha256.lower()]
            which = (f"{official[0].name} has the official SHA-256, so delete {({gz, raw} - set(official)).pop()}"
                     if len(official) == 1 else "delete the one that is not the file you want")
            raise DataError(f"{gz} and {raw} are two copies of {f.name} with different content, and lth "
                            f"will not guess which one to read; {which}")
    return present[0] if present else None


def load_idx_dataset(spec: DatasetSpec, root: DataRoot | None, download: bool) -> RawData:
    """Loader for MNIST-style data sets: four IDX files in ``<root>/<name>/``.

    Missing files are downloaded (if allowed) from the spec's mirrors; a present file that fails
    its checksum is reported, never silently replaced.
    """
    assert root is not None
    folder = root.path / spec.name
    found: dict[str, Path] = {}
    missing: list[FileSpec] = []
    for f in spec.files:
        p = _find_idx(folder, f)
        if p is None:
            missing.append(f)
        else:
            found[f.name] = p

    errors: list[str] = []
    if missing and download and spec.mirrors:
        for f in missing:

            def verify(tmp: Path, f: FileSpec = f) -> None:
                read_idx(tmp, sha256=f.sha256)

            dest = folder / f"{f.name}.gz"
            errs = download_verified([m + f.name + ".gz" for m in spec.mirrors], dest, verify)
            if errs:
                errors.extend(errs)
            else:
                found[f.name] = dest
        missing = [f for f in missing if f.name not in found]
    if missing:
        raise missing_files_error(
            spec, root, [f"{f.name}(.gz)" for f in missing], [folder], download, errors
        )

    arrays = {}
    for f in spec.files:
        path = found[f.name]
        try:
            arrays[f.name] = read_idx(path, sha256=f.sha256)
        except DataError as e:
            raise DataError(f"{e}\n(part of the {spec.name} data set under {folder})") from None
    c, h, w = spec.input_shape
    out = []
    for images, labels in ((_IDX_FILES[0], _IDX_FILES[1]), (_IDX_FILES[2], _IDX_FILES[3])):
        x, y = arrays[images], arrays[labels]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (h, w):
            raise DataError(
                f"{found[images]}: expected uint8 images of shape (N, {h}, {w}), got "
                f"{x.dtype} array of shape {x.shape}; this is not a {spec.name} image file"
            )
        if y.dtype != np.uint8 or y.ndim != 1:
            raise DataError(
                f"{found[labels]}: expected a 1-D uint8 label array, got {y.dtype} array of "
                f"shape {y.shape}; this is not a {spec.name} label file"
            )
        out.append((x.reshape(-1, c, h, w), y, f"{found[images]} / {found[labels]}"))
    (trx, try_, trs), (tex, tey, tes) = out
    return RawData(trx, try_, tex, tey, trs, tes)


register(
    DatasetSpec(
        name="mnist",
        input_shape=(1, 28, 28),
        num_classes=10,
        default_val_size=5000,
        mean=(0.1307,),
        std=(0.3081,),
        pixel_scale=255.0,
        loader=load_idx_dataset,
        files=tuple(FileSpec(n, h) for n, h in zip(_IDX_FILES, _MNIST_SHA256, strict=True)),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        description="MNIST handwritten digits 28x28: 60000 train / 10000 test",
    )
)

register(
    DatasetSpec(
        name="fashion-mnist",
        input_shape=(1, 28, 28),
        num_classes=10,
        default_val_size=5000,
        mean=(0.2860,),
        std=(0.3530,),
        pixel_scale=255.0,
        loader=load_idx_dataset,
        files=tuple(FileSpec(n, h) for n, h in zip(_IDX_FILES, _FASHION_SHA256, strict=True)),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        description="Fashion-MNIST clothing 28x28: 60000 train / 10000 test",
    ),
    aliases=("fashion", "fashionmnist"),
)
