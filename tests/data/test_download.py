"""Tests for lth.data.download: verified downloads and the message for missing files.

No test touches the network: ``lth.data.download._fetch`` is replaced wherever a download could
happen (the ``offline`` fixture, or a fake that serves local files).
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from lth.data import DATASETS, DataError, download, load_splits
from tests.data.files import IDX_NAMES, idx_bytes, write, write_idx_set


def test_offline_missing_files_error(tmp_path, monkeypatch, offline, isolated_env):
    root = tmp_path / "via-env"
    monkeypatch.setenv("LTH_DATA", str(root))
    write(root / "mnist" / "t10k-labels-idx1-ubyte", idx_bytes(np.arange(5) % 10))
    with pytest.raises(DataError) as e:
        load_splits("mnist", val_size=5000, split_seed=0)
    msg = str(e.value)
    assert "3 required file(s) missing" in msg
    for name in IDX_NAMES[:3]:
        assert name in msg
    assert "missing: t10k-labels" not in msg
    assert f"Looked in:\n  {root / 'mnist'}\n" in msg
    assert "LTH_DATA environment variable" in msg
    assert "--data-dir" in msg and "LTH_DATA=" in msg
    assert "network is unreachable" in msg
    assert len(offline) == 3 * 2  # every missing file tried on both mirrors
    assert all(u.startswith("https://") and u.endswith(".gz") for u in offline)
    leftovers = sorted(p.name for p in (root / "mnist").iterdir())
    assert leftovers == ["t10k-labels-idx1-ubyte"]  # no partial downloads left behind


def test_missing_files_with_download_disabled(tmp_path, offline, isolated_env):
    with pytest.raises(DataError) as e:
        load_splits("fashion-mnist", tmp_path, val_size=10, split_seed=0, download=False)
    msg = str(e.value)
    assert "4 required file(s) missing" in msg and "download=False" in msg
    assert str(tmp_path / "fashion-mnist") in msg and "--data-dir" in msg
    assert offline == []


def test_missing_files_cache_dir_reported(tmp_path, offline, isolated_env):
    with pytest.raises(DataError) as e:
        load_splits("mnist", val_size=10, split_seed=0, download=False)
    msg = str(e.value)
    assert str(tmp_path / "xdg" / "lth" / "data" / "mnist") in msg
    assert "cache" in msg


def test_pointing_at_the_dataset_folder_itself_gives_hint(tmp_path, offline):
    with pytest.raises(DataError) as e:
        load_splits("mnist", tmp_path / "mnist", val_size=10, split_seed=0, download=False)
    assert "must be its parent" in str(e.value)


def test_download_with_fake_fetch(tmp_path, monkeypatch, shared_data):
    mnist_dir = shared_data / "mnist"
    calls: list[str] = []

    def fetch(url: str, dest: Path) -> None:  # serves the local copy instead of the internet
        calls.append(url)
        shutil.copyfile(mnist_dir / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(download, "_fetch", fetch)
    s = load_splits("mnist", tmp_path, val_size=5000, split_seed=0)
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (55000, 5000, 10000)
    assert calls == [DATASETS["mnist"].mirrors[0] + n + ".gz" for n in IDX_NAMES]
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(
        n + ".gz" for n in IDX_NAMES
    )
    calls.clear()
    load_splits("mnist", tmp_path, val_size=5000, split_seed=0)
    assert calls == []  # present files are not downloaded again


def test_download_checksum_mismatch_is_deleted(tmp_path, monkeypatch, shared_data):
    mnist_dir = shared_data / "mnist"
    calls: list[str] = []

    def fetch(url: str, dest: Path) -> None:
        calls.append(url)
        name = url.rsplit("/", 1)[1]
        payload = bytearray(gzip.decompress((mnist_dir / name).read_bytes()))
        if name.startswith("t10k-labels"):
            payload[-1] = (payload[-1] + 1) % 10  # valid structure, wrong content
        dest.write_bytes(gzip.compress(bytes(payload), compresslevel=1))

    monkeypatch.setattr(download, "_fetch", fetch)
    with pytest.raises(DataError) as e:
        load_splits("mnist", tmp_path, val_size=10, split_seed=0)
    msg = str(e.value)
    assert "missing: t10k-labels-idx1-ubyte" in msg
    assert "checksum mismatch" in msg
    assert sum("t10k-labels" in u for u in calls) == 2  # both mirrors tried
    present = sorted(p.name for p in (tmp_path / "mnist").iterdir())
    assert present == sorted(n + ".gz" for n in IDX_NAMES[:3])  # bad one deleted, no .part


def test_download_into_unwritable_place_reports_it(tmp_path, offline):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    with pytest.raises(DataError) as e:
        load_splits("mnist", blocker, val_size=10, split_seed=0)
    assert "cannot create directory" in str(e.value)
    assert offline == []


@pytest.fixture
def system_tmp(tmp_path, monkeypatch) -> Path:
    """The system's temporary folder, pointed into tmp_path so what is left there can be seen."""
    d = tmp_path / "system-tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def test_a_failed_download_creates_no_data_folder(tmp_path, offline, system_tmp):
    root = tmp_path / "new" / "data"
    with pytest.raises(DataError, match="network is unreachable"):
        load_splits("mnist", root, val_size=10, split_seed=0)
    assert len(offline) == 4 * 2  # every file tried on both mirrors
    assert not (tmp_path / "new").exists()
    assert list(system_tmp.iterdir()) == []


def test_a_download_that_fails_verification_creates_no_data_folder(tmp_path, monkeypatch, system_tmp):
    monkeypatch.setattr(download, "_fetch", lambda url, dest: dest.write_bytes(b"<html>not found</html>"))
    root = tmp_path / "new" / "data"
    with pytest.raises(DataError, match="bad magic number"):
        load_splits("mnist", root, val_size=10, split_seed=0)
    assert not (tmp_path / "new").exists()
    assert list(system_tmp.iterdir()) == []


def test_a_successful_download_creates_the_data_folder(tmp_path, monkeypatch, no_checksums, system_tmp):
    served = tmp_path / "mirror"
    write_idx_set(served, 12, 5)
    monkeypatch.setattr(download, "_fetch", lambda url, dest: shutil.copyfile(served / url.rsplit("/", 1)[1], dest))
    root = tmp_path / "new" / "data"
    s = load_splits("mnist", root, val_size=2, split_seed=0)
    assert len(s.test_x) == 5
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(n + ".gz" for n in IDX_NAMES)
    assert list(system_tmp.iterdir()) == []
