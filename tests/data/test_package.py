"""Tests for the lth.data package surface: cheap import, documented public names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lth.data


def test_import_does_no_work():
    src = Path(__file__).resolve().parents[2] / "src"
    code = "import sys, lth.data; assert 'sklearn' not in sys.modules, 'sklearn imported'"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_public_names_exist_and_are_documented():
    for name in lth.data.__all__:
        obj = getattr(lth.data, name)
        if name != "DATASETS":  # a dict: documented in lth.data.registry
            assert (obj.__doc__ or "").strip(), f"lth.data.{name} has no docstring"
    assert (lth.data.__doc__ or "").strip()
