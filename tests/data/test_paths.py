"""Tests for lth.data.paths: which data root is used."""

from __future__ import annotations

from lth.data import resolve_data_dir


def test_resolve_data_dir_precedence(monkeypatch, tmp_path):
    explicit, env, xdg, home = (tmp_path / n for n in ("explicit", "env", "xdg", "home"))
    monkeypatch.setenv("LTH_DATA", str(env))
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.setenv("HOME", str(home))
    assert resolve_data_dir(explicit) == explicit
    assert resolve_data_dir(str(explicit)) == explicit
    assert resolve_data_dir(None) == env
    monkeypatch.setenv("LTH_DATA", "")  # empty counts as unset
    assert resolve_data_dir(None) == xdg / "lth" / "data"
    monkeypatch.delenv("LTH_DATA")
    assert resolve_data_dir(None) == xdg / "lth" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored per the XDG spec
    assert resolve_data_dir(None) == home / ".cache" / "lth" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir(None) == home / ".cache" / "lth" / "data"
    assert resolve_data_dir("~/d") == home / "d"
    assert not explicit.exists() and not env.exists()  # resolving never creates anything
