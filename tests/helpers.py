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


def write_finished_unit(store, record) -> None:
    """Write ``record`` into a run directory as the driver would finish such a unit: evaluations
    that give exactly its numbers, trained weights, and the inputs it started from (theta0 and,
    at pruned levels, the level's mask), all with their checksums."""
    import torch

    t, lv = record.trial, record.level
    if store.load_theta0(t) is None:
        store.save_theta0(t, {"w": torch.zeros(4)})
    inputs = [store.theta0_path(t)]
    if lv > 0:
        if store.load_level_mask(t, lv) is None:
            store.save_level_mask(t, lv, {"w": torch.tensor([True, True, True, False])})
        inputs.append(store.level_mask_path(t, lv))
    if not record.ok:
        store.finish_unit(record, inputs=inputs)
        return
    metrics = [{"iteration": record.early_stop_iteration, "val_loss": record.min_val_loss,
                "val_accuracy": record.early_stop_val_accuracy, "test_accuracy": record.early_stop_test_accuracy}]
    if record.final_iteration != record.early_stop_iteration:
        assert record.final_val_loss > record.min_val_loss, "the early stop must be the minimum"
        metrics.append({"iteration": record.final_iteration, "val_loss": record.final_val_loss,
                        "val_accuracy": 0.5, "test_accuracy": record.final_test_accuracy})
    store.finish_unit(record, metrics=metrics, final_state={"w": torch.ones(4)}, inputs=inputs)


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder in which this process cannot create files: a read-only folder or, for root (whom
    file permissions do not stop), /sys, which refuses new files to everyone. Skips the calling
    test where neither refuses."""
    import pytest

    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    for folder in (ro, Path("/sys")):
        probe = folder / "lth-probe"
        try:
            probe.open("wb").close()
        except OSError:
            return folder
        probe.unlink()
    pytest.skip("no folder here refuses new files (root, and /sys is writable)")
