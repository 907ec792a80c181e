"""Fixtures of the lth.data tests: no network, no real checksums for hand-written files, and
no data root outside tmp_path.

Real MNIST / Fashion-MNIST come from the ``shared_data`` / ``fashion_data`` fixtures of
tests/conftest.py (skipped without the files, failed under LTH_REQUIRE_DATA=1). CIFAR-10 is not
available, so its tests write tiny files in the exact binary format.
"""

from __future__ import annotations

import dataclasses
import urllib.error
from pathlib import Path

import pytest

from lth.data import DATASETS, download


@pytest.fixture
def no_checksums(monkeypatch):
    """Make the registry's MNIST spec hash-free, so tiny hand-written IDX files reach the
    structural checks (real hashes would reject them first)."""
    spec = DATASETS["mnist"]
    files = tuple(dataclasses.replace(f, sha256=None) for f in spec.files)
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(spec, files=files))


@pytest.fixture
def offline(monkeypatch):
    """Any download attempt fails like an offline machine; the attempted URLs are recorded."""
    calls: list[str] = []

    def fetch(url: str, dest: Path) -> None:
        calls.append(url)
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(download, "_fetch", fetch)
    return calls


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """No LTH_DATA, and the cache dir pointed into tmp_path, so nothing real is consulted."""
    monkeypatch.delenv("LTH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
