"""lth.pruning.io: masks and weights through safetensors files, and the errors for files that do not fit."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import prune

from lth.models import build_model, initialize, prunable_tensors
from lth.pruning import full_mask, load_mask, load_weights, prune_layerwise, save_mask, save_weights


class BNNet(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(2, width, 3)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def lenet_mask() -> dict[str, torch.Tensor]:
    model = build_model("mlp-100-50", (1, 8, 8), 10)
    initialize(model, torch.Generator().manual_seed(0))
    w = prunable_tensors(model)
    return prune_layerwise(w, full_mask(w), {n: 0.37 for n in w})


def test_mask_round_trip_is_exact_and_keeps_order(tmp_path):
    mask = lenet_mask()
    reordered = {n: mask[n] for n in reversed(list(mask))}  # not alphabetical
    reordered["a.conv.weight"] = torch.rand(3, 2, 3, 3, generator=torch.Generator().manual_seed(1)) < 0.5
    path = tmp_path / "mask.safetensors"
    save_mask(reordered, path)
    back = load_mask(path)
    assert list(back) == list(reordered)
    for n, m in reordered.items():
        assert back[n].dtype == torch.bool and back[n].device.type == "cpu"
        assert torch.equal(back[n], m), n
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert meta["lth.kind"] == "mask" and json.loads(meta["lth.names"]) == list(reordered)
        stored = f.keys()
        assert sorted(stored) == sorted(reordered) and all(f.get_tensor(k).dtype == torch.bool for k in stored)


def test_mask_accepts_0_1_tensors_and_refuses_other_values(tmp_path):
    save_mask({"w": torch.tensor([[1.0, 0.0]]), "v": torch.tensor([0, 1], dtype=torch.uint8)}, tmp_path / "m")
    back = load_mask(tmp_path / "m")
    assert back["w"].tolist() == [[True, False]] and back["v"].tolist() == [False, True]
    with pytest.raises(ValueError, match="'w'"):
        save_mask({"w": torch.tensor([0.5, 1.0])}, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    save_mask({}, tmp_path / "empty")
    assert load_mask(tmp_path / "empty") == {}


def test_weights_round_trip_from_module_and_state_dict(tmp_path):
    torch.manual_seed(0)
    model = BNNet()
    model.train()
    model(torch.randn(4, 2, 5, 5))  # running stats and num_batches_tracked (int64) change
    save_weights(model, tmp_path / "w.safetensors")
    sd = load_weights(tmp_path / "w.safetensors")
    expected = model.state_dict()
    assert list(sd) == list(expected)
    for n, t in expected.items():
        assert sd[n].dtype == t.dtype and torch.equal(sd[n], t), n
    other = BNNet()
    assert load_weights(tmp_path / "w.safetensors", other) is not None
    assert all(torch.equal(other.state_dict()[n], t) for n, t in expected.items())
    save_weights({"x": torch.arange(6.0).view(2, 3).t()}, tmp_path / "sd")  # non-contiguous view
    assert torch.equal(load_weights(tmp_path / "sd")["x"], torch.arange(6.0).view(2, 3).t())


def test_tied_weights_are_saved(tmp_path):
    model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    model[1].weight = model[0].weight  # tied, as in language models
    save_weights(model, tmp_path / "tied")
    fresh = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    load_weights(tmp_path / "tied", fresh)
    assert torch.equal(fresh[0].weight, model[0].weight) and torch.equal(fresh[1].weight, model[0].weight)


def test_loading_into_a_model_names_every_mismatch_and_changes_nothing(tmp_path):
    save_weights(BNNet(width=4), tmp_path / "w")
    target = BNNet(width=5)
    target.extra = nn.Linear(1, 1)
    before = {n: t.clone() for n, t in target.state_dict().items()}
    with pytest.raises(ValueError) as e:
        load_weights(tmp_path / "w", target)
    msg = str(e.value)
    assert "missing from the file: ['extra.weight', 'extra.bias']" in msg
    assert "conv.weight: file (4, 2, 3, 3) vs model (5, 2, 3, 3)" in msg
    assert "fc.weight: file (3, 4) vs model (3, 5)" in msg and "bn.running_var: file (4,) vs model (5,)" in msg
    assert "num_batches_tracked" not in msg  # same shape: not a mismatch
    assert all(torch.equal(target.state_dict()[n], t) for n, t in before.items())


def test_wrong_names_are_unexpected_and_missing(tmp_path):
    sd = BNNet().state_dict()
    sd["fc.weights"] = sd.pop("fc.weight")
    save_weights(sd, tmp_path / "w")
    with pytest.raises(ValueError) as e:
        load_weights(tmp_path / "w", BNNet())
    assert "missing from the file: ['fc.weight']; unexpected in the file: ['fc.weights']" in str(e.value)


def test_a_torch_pruned_file_gets_a_hint(tmp_path):
    model = BNNet()
    prune.l1_unstructured(model.fc, "weight", amount=0.5)
    save_weights(model, tmp_path / "pruned")
    assert {"fc.weight_orig", "fc.weight_mask"} <= set(load_weights(tmp_path / "pruned"))
    with pytest.raises(ValueError, match="prune.remove"):
        load_weights(tmp_path / "pruned", BNNet())


def test_wrong_file_kind_is_refused(tmp_path):
    save_mask(lenet_mask(), tmp_path / "mask")
    save_weights(BNNet(), tmp_path / "weights")
    with pytest.raises(ValueError, match="is an lth mask file, not an lth weights file"):
        load_weights(tmp_path / "mask")
    with pytest.raises(ValueError, match="is an lth weights file, not an lth mask file"):
        load_mask(tmp_path / "weights")
    # a plain safetensors file (no lth metadata) is accepted as weights, not as a mask
    save_file({"weight": torch.ones(2, 2), "bias": torch.zeros(2)}, str(tmp_path / "plain"))
    lin = nn.Linear(2, 2)
    assert list(load_weights(tmp_path / "plain", lin)) == ["bias", "weight"]
    assert torch.equal(lin.weight, torch.ones(2, 2))
    with pytest.raises(ValueError, match="without lth metadata"):
        load_mask(tmp_path / "plain")


def test_not_a_safetensors_file(tmp_path):
    (tmp_path / "junk").write_bytes(b"\x00\x01 definitely not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_mask(tmp_path / "junk")
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "absent")


def test_saving_replaces_a_file_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "m"
    save_mask({"a": torch.ones(3, dtype=torch.bool)}, path)
    save_mask({"b": torch.zeros(2, dtype=torch.bool)}, path)
    assert list(load_mask(path)) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    with pytest.raises(TypeError, match="not tensors"):
        save_weights({"a": 1.0}, tmp_path / "w")
