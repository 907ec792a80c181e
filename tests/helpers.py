"""Helpers shared by test modules (fixtures live in conftest.py).

Real MNIST / Fashion-MNIST are looked up, in order, in ``$LTH_TEST_DATA``, ``../shared/datasets``
beside the repository and the user's lth data cache. Where none has them, tests that need them
skip with a reason saying how to provide them; with ``LTH_REQUIRE_DATA=1`` (set by ``.ci/run``)
the same tests fail instead, so CI always runs them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIRE_ENV = "LTH_REQUIRE_DATA"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _user_cache() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "lth" / "data"


def data_candidates() -> list[Path]:
    """Where the tests look for real data sets, in order."""
    out = []
    if os.environ.get("LTH_TEST_DATA"):
        out.append(Path(os.environ["LTH_TEST_DATA"]))
    out += [ROOT.parent / "shared" / "datasets", _user_cache()]
    return out


def _complete(folder: Path) -> bool:
    return all((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in IDX_FILES)


def find_data_root(dataset: str = "mnist") -> Path | None:
    """The first candidate folder holding all four IDX files of ``dataset``, or None."""
    for root in data_candidates():
        if _complete(root / dataset):
            return root
    return None


def data_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def require_data(dataset: str = "mnist") -> Path:
    """The data root holding ``dataset``; skips the calling test (fails it under LTH_REQUIRE_DATA=1)
    when no candidate folder has the files."""
    root = find_data_root(dataset)
    if root is not None:
        return root
    where = ", ".join(str(p) for p in data_candidates())
    msg = (f"real {dataset} not found (looked in {where}); put the four IDX files (.gz or raw) in "
           f"<dir>/{dataset}/ and set LTH_TEST_DATA=<dir>")
    if data_required():
        pytest.fail(f"{msg} [{REQUIRE_ENV}=1 makes this a failure]")
    pytest.skip(msg)
