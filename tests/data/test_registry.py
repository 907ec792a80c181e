"""Tests for lth.data.registry: registered data sets, name lookup, registration."""

from __future__ import annotations

import dataclasses

import pytest

from lth.data import DATASETS, DataError, dataset_info, dataset_names, load_splits, registry


def test_registry_names_and_info():
    assert set(dataset_names()) == {"digits", "mnist", "fashion-mnist", "cifar-10"}
    assert dataset_info("MNIST") is DATASETS["mnist"]
    assert dataset_info("fashion_mnist") is DATASETS["fashion-mnist"]
    assert dataset_info("cifar10") is DATASETS["cifar-10"]
    for name in dataset_names():
        spec = dataset_info(name)
        assert spec.name == name
        assert len(spec.mean) == len(spec.std) == spec.input_shape[0]
        assert spec.default_val_size > 0
    assert DATASETS["mnist"].input_shape == (1, 28, 28)
    assert DATASETS["digits"].input_shape == (1, 8, 8)
    assert DATASETS["cifar-10"].input_shape == (3, 32, 32)
    assert DATASETS["cifar-10"].archive.md5 == "c32a1d4ab5d03f1284b67883e8d87530"


def test_registration_order_and_aliases():
    # The order is that of listings and of the "valid names" in error messages.
    assert dataset_names() == ["digits", "mnist", "fashion-mnist", "cifar-10"]
    for alias, name in [("fashion", "fashion-mnist"), ("FashionMNIST", "fashion-mnist"),
                        ("Fashion_MNIST", "fashion-mnist"), ("CIFAR_10", "cifar-10"),
                        (" cifar10 ", "cifar-10"), ("Digits", "digits")]:
        assert dataset_info(alias) is DATASETS[name], alias


@pytest.mark.parametrize(
    ("name", "mean", "std", "val_size"),
    [
        ("mnist", (0.1307,), (0.3081,), 5000),
        ("fashion-mnist", (0.2860,), (0.3530,), 5000),
        ("cifar-10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 5000),
        ("digits", (0.3053,), (0.3760,), 300),
    ],
)
def test_normalization_constants(name, mean, std, val_size):
    spec = dataset_info(name)
    assert spec.mean == mean and spec.std == std and spec.default_val_size == val_size


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DataError) as e:
        dataset_info("imagenet")
    msg = str(e.value)
    assert "imagenet" in msg
    for name in ("digits", "mnist", "fashion-mnist", "cifar-10"):
        assert name in msg
    with pytest.raises(DataError, match="imagenet"):
        load_splits("imagenet", val_size=0, split_seed=0)


def test_register_adds_a_data_set_and_rejects_duplicates(monkeypatch):
    monkeypatch.setattr(registry, "DATASETS", dict(DATASETS))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    spec = dataclasses.replace(DATASETS["mnist"], name="kmnist")
    assert registry.register(spec, aliases=("kuzushiji",)) is spec
    assert dataset_info("KMNIST") is spec and dataset_info("kuzushiji") is spec
    assert dataset_names()[-1] == "kmnist"
    with pytest.raises(ValueError, match="'mnist' is registered twice"):
        registry.register(DATASETS["mnist"])
    other = dataclasses.replace(spec, name="other")
    with pytest.raises(ValueError, match="already names 'kmnist'"):
        registry.register(other, aliases=("Kuzushiji",))
    assert "other" not in registry.DATASETS  # a rejected registration changes nothing
