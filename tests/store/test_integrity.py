"""lth.store.integrity: file digests, their JSON form, and the cache that re-reads a file only when
something touched it."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lth.store import DigestCache, FileDigest
from lth.store.integrity import digest_bytes


@given(st.binary(max_size=5000))
def test_a_digest_is_the_size_and_hashlib_sha256(data):
    d = digest_bytes(data)
    assert d == FileDigest(len(data), hashlib.sha256(data).hexdigest())
    assert FileDigest.from_dict(d.to_dict()) == d


@pytest.mark.parametrize("bad", [
    None, [], {"size": 1}, {"size": -1, "sha256": "0" * 64}, {"size": True, "sha256": "0" * 64},
    {"size": 1, "sha256": "xyz"}, {"size": 1, "sha256": "A" * 64}, {"size": 1, "sha256": "0" * 64, "x": 1},
])
def test_a_malformed_digest_is_a_value_error(bad):
    with pytest.raises(ValueError):
        FileDigest.from_dict(bad)


def test_the_cache_sees_every_change_to_a_file_even_one_keeping_size_and_mtime(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100)
    cache = DigestCache()
    first = cache.digest(path)
    assert first == digest_bytes(b"a" * 100)
    st0 = os.stat(path)
    path.write_bytes(b"b" * 100)  # same size ...
    os.utime(path, ns=(st0.st_atime_ns, st0.st_mtime_ns))  # ... and the old modification time, as rsync -t would
    assert cache.digest(path) == digest_bytes(b"b" * 100)
    assert cache.problem(path, first) == "content differs from what was written (SHA-256 mismatch)"


def test_problems_name_missing_resized_and_directory_files(tmp_path):
    cache = DigestCache()
    want = digest_bytes(b"12345")
    path = tmp_path / "f"
    assert cache.problem(path, want) == "is missing"
    path.write_bytes(b"123")
    assert cache.problem(path, want) == "has 3 bytes, 5 were written"
    path.write_bytes(b"12345")
    assert cache.problem(path, want) is None
    path.unlink()
    path.mkdir()
    assert cache.problem(path, want) == "is a directory"


def test_remember_avoids_rereading_a_file_this_process_wrote(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_bytes(b"xyz")
    cache = DigestCache()
    cache.remember(path, digest_bytes(b"xyz"))
    monkeypatch.setattr("builtins.open", lambda *a, **k: pytest.fail("re-read a remembered file"))
    assert cache.digest(path) == digest_bytes(b"xyz")
