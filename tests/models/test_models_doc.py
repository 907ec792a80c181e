"""docs/MODELS.md's model table states what the code builds: each row's counts equal parameter_counts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lth.models import MODELS, build_model, parameter_counts
from tests.models.shapes import CIFAR, MNIST

DOC = Path(__file__).resolve().parents[2] / "docs" / "MODELS.md"


def _rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for name in re.findall(r"`([a-z0-9-]+)`", cells[0]) if line.startswith("| `") else []:
            if name in MODELS:
                rows[name] = cells
    return rows


def _num(text: str) -> int:
    return int(text.replace(",", ""))


def test_every_model_has_a_row():
    assert set(_rows()) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_row_counts_equal_the_built_models(name):
    cells = _rows()[name]
    base = name.removesuffix("-dropout")
    if cells[2] == "as `convN`":  # the dropout rows refer to their Conv-N row
        cells = _rows()[base]
    for shape, prunable, total in [(CIFAR, cells[2], cells[3]), (MNIST, cells[4], cells[5])]:
        c = parameter_counts(build_model(name, shape, 10))
        m = re.fullmatch(r"([\d,]+) \(([\d,]+) / ([\d,]+) / ([\d,]+)\)", prunable)
        assert m, prunable
        assert [_num(x) for x in m.groups()] == [c.prunable, c.conv, c.fc, c.output]
        assert _num(total) == c.total
