"""Every docstring example of the user-facing mask and model packages runs, and every public
function of them has one (they are the reference a user reads first)."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import lth.models
import lth.pruning

PACKAGES = (lth.models, lth.pruning)
MODULES = [name for pkg in PACKAGES
           for name in [pkg.__name__] + [f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)]]
FUNCTIONS = [(pkg, n) for pkg in PACKAGES for n in sorted(pkg.__all__) if inspect.isfunction(getattr(pkg, n))]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (run doctest on it)"


@pytest.mark.parametrize("pkg, name", FUNCTIONS, ids=[f"{p.__name__}.{n}" for p, n in FUNCTIONS])
def test_public_function_has_an_example(pkg, name):
    assert ">>>" in (getattr(pkg, name).__doc__ or ""), f"{pkg.__name__}.{name} has no docstring example"
