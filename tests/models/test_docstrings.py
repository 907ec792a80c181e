"""Every docstring example in lth.models runs and gives the output it shows; every public function has one."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import lth.models as package

MODULES = [package.__name__] + [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (run doctest on it)"


@pytest.mark.parametrize("name", sorted(n for n in package.__all__ if inspect.isfunction(getattr(package, n))))
def test_public_function_has_an_example(name):
    assert ">>>" in (getattr(package, name).__doc__ or ""), f"{package.__name__}.{name} has no docstring example"
