"""Every Python example in docs/API.md runs as written (each section in a fresh directory)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

API_MD = Path(__file__).resolve().parents[2] / "docs" / "API.md"


def _sections() -> list[tuple[str, str]]:
    text = API_MD.read_text()
    out = []
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        title = part.splitlines()[0]
        code = "\n".join(re.findall(r"```python\n(.*?)```", part, flags=re.S))
        if code.strip():
            out.append((title, code))
    return out


def test_the_page_has_examples():
    assert len(_sections()) >= 5


@pytest.mark.parametrize("title, code", _sections(), ids=[t for t, _ in _sections()])
def test_example_runs(title, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"docs/API.md: {title}", "exec"), {"__name__": "__docs__"})
    assert os.getcwd() == str(tmp_path)
