"""The device check and the machine and software a unit's record names."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import torch

import lth
from lth.config import ConfigError
from lth.training.device import check_device, describe_machine, software_versions

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_package_version_is_the_one_pyproject_states():
    declared = re.search(r'^version = "([^"]+)"', PYPROJECT.read_text(), re.M).group(1)
    assert lth.__version__ == declared


def test_software_versions_names_lth_torch_and_python():
    try:
        installed = importlib.metadata.version("lth")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree (benchmarks/gpu.sh)
        installed = f"{lth.__version__} (not installed)"
    assert software_versions().startswith(f"lth {installed}, torch {torch.__version__}, Python ")


def test_lth_run_from_a_source_tree_names_its_own_version(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert software_versions().startswith(f"lth {lth.__version__} (not installed), torch ")


def test_a_cpu_names_its_processor_and_cpu_count():
    assert describe_machine("cpu").endswith("logical CPUs")
    assert check_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_clear_configuration_error():
    with pytest.raises(ConfigError, match="CUDA is not available on this machine.*use --device cpu"):
        check_device("cuda")
