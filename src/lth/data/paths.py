"""Where data sets live: choosing the data root.

Layout of a data root, one folder per data set::

    <root>/mnist/train-images-idx3-ubyte.gz        (or the uncompressed file; both only if
                                                    they hold the same data)
    <root>/mnist/train-labels-idx1-ubyte.gz
    <root>/mnist/t10k-images-idx3-ubyte.gz
    <root>/mnist/t10k-labels-idx1-ubyte.gz
    <root>/fashion-mnist/...                        (same four names)
    <root>/cifar-10/cifar-10-batches-bin/data_batch_{1..5}.bin, test_batch.bin
                                                    (or the .bin files directly in <root>/cifar-10/,
                                                    or the official cifar-10-binary.tar.gz there)
    <root>/cifar-10/cifar-10-batches-py/data_batch_{1..5}, test_batch
                                                    (the Python version: likewise loose, or the
                                                    official cifar-10-python.tar.gz; see
                                                    lth.data.cifar for which version is used)

The root is the explicit argument (``--data-dir``), else the ``LTH_DATA`` environment variable,
else a per-user cache directory. Resolving never touches the file system, and a folder is created
only to hold a file that was downloaded and verified.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

#: Environment variable naming the data root when no explicit directory is given.
ENV_VAR = "LTH_DATA"


class DataRoot(NamedTuple):
    """A resolved data root plus a human-readable note on how it was chosen (for messages)."""

    path: Path
    source: str


def _default_cache_dir() -> tuple[Path, str]:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says relative values must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "lth" / "data", "default cache directory ($XDG_CACHE_HOME/lth/data)"
    return Path.home() / ".cache" / "lth" / "data", "default cache directory (~/.cache/lth/data)"


def resolve_root(data_dir: str | os.PathLike[str] | None) -> DataRoot:
    """:func:`resolve_data_dir` plus which setting chose the root, for error messages."""
    if data_dir is not None and str(data_dir) != "":
        path, source = Path(data_dir), "the --data-dir / data_dir argument"
    elif os.environ.get(ENV_VAR, ""):
        path, source = Path(os.environ[ENV_VAR]), f"the {ENV_VAR} environment variable"
    else:
        path, source = _default_cache_dir()
    # abspath (not resolve): messages should show the path the user gave, minus "..".
    return DataRoot(Path(os.path.abspath(path.expanduser())), source)


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """Return the data root to use: ``data_dir`` if given, else ``$LTH_DATA``, else the cache.

    The cache is ``$XDG_CACHE_HOME/lth/data`` (if that variable is set to an absolute path) or
    ``~/.cache/lth/data``. Empty strings count as "not given". The path is made absolute but
    not created: only a successful download creates directories.
    """
    return resolve_root(data_dir).path
