"""lth.models.introspection: which parameters a mask covers, on registered models and on any nn.Module."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from lth.models import (
    MODELS,
    build_model,
    is_conv_parameter,
    output_parameter,
    prunable_parameters,
    prunable_tensors,
)
from tests.models.shapes import SHAPES


@pytest.mark.parametrize("name", sorted(MODELS))
def test_prunable_set_is_linear_and_conv_weights_only(name):
    model = build_model(name, SHAPES[name], 10)
    names = prunable_parameters(model)
    params = dict(model.named_parameters())
    assert names and all(n.endswith("weight") and params[n].dim() >= 2 for n in names)
    assert output_parameter(model) in names
    never = set(getattr(model, "never_prune", ()))
    assert not never & set(names)


def test_prunable_parameters_on_any_module():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    assert prunable_parameters(model) == ["0.weight", "3.weight"]
    assert output_parameter(model) == "3.weight"


# --------------------------------------------------------------------------- models not in the registry


class SmallBNNet(nn.Module):
    """A CNN with BatchNorm that lth does not know: conv-BN-ReLU twice, pool, fc."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.body(x))


class TinyTextModel(nn.Module):
    """Embedding + LayerNorm + an encoder of Linear layers + a classifier."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.norm = nn.LayerNorm(16)
        self.encoder = nn.ModuleList(
            nn.ModuleDict({"attn": nn.Linear(16, 16), "ffn": nn.Linear(16, 16), "ln": nn.LayerNorm(16)})
            for _ in range(2)
        )
        self.decoder = nn.Linear(16, 16)
        self.classifier = nn.Linear(16, 3)

    def forward(self, tokens):
        x = self.norm(self.embed(tokens))
        for block in self.encoder:
            x = block["ln"](x + block["ffn"](torch.relu(block["attn"](x))))
        return self.classifier(torch.relu(self.decoder(x)).mean(1))


ENCODER_LINEARS = ["encoder.0.attn.weight", "encoder.0.ffn.weight", "encoder.1.attn.weight", "encoder.1.ffn.weight"]


def test_small_cnn_with_batchnorm_prunes_conv_and_linear_weights_only():
    model = SmallBNNet()
    assert prunable_parameters(model) == ["body.0.weight", "body.3.weight", "head.weight"]
    assert output_parameter(model) == "head.weight"
    assert [is_conv_parameter(model, n) for n in prunable_parameters(model)] == [True, True, False]
    params = dict(model.named_parameters())
    assert {n for n in params if n.startswith(("body.1.", "body.4."))} == {
        "body.1.weight", "body.1.bias", "body.4.weight", "body.4.bias"}
    assert not {"body.1.weight", "body.4.weight", "body.0.bias", "head.bias"} & set(prunable_parameters(model))
    tensors = prunable_tensors(model)
    assert list(tensors) == prunable_parameters(model)
    assert all(tensors[n] is params[n] for n in tensors)


def test_embedding_and_layernorm_are_never_pruned_by_default():
    model = TinyTextModel()
    names = prunable_parameters(model)
    assert names == [*ENCODER_LINEARS, "decoder.weight", "classifier.weight"]
    assert not any(n.startswith(("embed.", "norm.")) or ".ln." in n or n.endswith("bias") for n in names)
    assert output_parameter(model) == "classifier.weight"


def test_types_choose_the_module_types_whose_weight_is_prunable():
    model = TinyTextModel()
    assert prunable_parameters(model, types=nn.Embedding) == ["embed.weight"]
    assert prunable_parameters(model, types=(nn.Embedding, nn.Linear))[:2] == ["embed.weight", "encoder.0.attn.weight"]
    assert prunable_parameters(SmallBNNet(), types=[nn.Conv2d]) == ["body.0.weight", "body.3.weight"]
    with pytest.raises(TypeError, match="nn.Module subclasses"):
        prunable_parameters(model, types=("Linear",))


def test_prunable_set_chosen_by_name_patterns():
    model = TinyTextModel()
    assert prunable_parameters(model, include="encoder.*.weight") == ENCODER_LINEARS
    assert prunable_parameters(model, include=["encoder.*.weight"], exclude=["encoder.1.*"]) == ENCODER_LINEARS[:2]
    assert prunable_parameters(model, include=["*.ffn.weight", "decoder.weight"]) == [
        "encoder.0.ffn.weight", "encoder.1.ffn.weight", "decoder.weight"]
    assert prunable_parameters(model, exclude="classifier.*") == [*ENCODER_LINEARS, "decoder.weight"]
    # an exclude that names only non-prunable parameters is accepted and changes nothing
    assert prunable_parameters(model, exclude=["norm.*"]) == prunable_parameters(model)
    # patterns are case-sensitive on every platform
    with pytest.raises(ValueError, match="Encoder"):
        prunable_parameters(model, include="Encoder.*")
    # the chosen set carries over to prunable_tensors
    assert list(prunable_tensors(model, include="encoder.*", exclude="*.attn.*")) == [
        "encoder.0.ffn.weight", "encoder.1.ffn.weight"]


@pytest.mark.parametrize("kwarg", ["include", "exclude"])
def test_pattern_matching_nothing_is_an_error_naming_it(kwarg):
    model = TinyTextModel()
    with pytest.raises(ValueError) as e:
        prunable_parameters(model, **{kwarg: ["encoder.*.weight", "encodr.*"]})
    msg = str(e.value)
    assert "'encodr.*'" in msg and "TinyTextModel" in msg
    assert "'encoder.*.weight'" not in msg.split("match")[0]


def test_include_pattern_matching_only_unprunable_parameters_is_an_error():
    with pytest.raises(ValueError, match=r"'norm\.\*'.*no prunable weight.*types="):
        prunable_parameters(TinyTextModel(), include=["norm.*"])
    with pytest.raises(ValueError, match="no prunable weight"):
        prunable_parameters(TinyTextModel(), include=["*.bias"])
    resnet = build_model("resnet20", SHAPES["resnet20"], 10)
    with pytest.raises(ValueError, match="never_prune"):
        prunable_parameters(resnet, include=["*shortcut*"])


def test_never_prune_applies_under_patterns():
    model = build_model("resnet20", SHAPES["resnet20"], 10)
    chosen = prunable_parameters(model, include=["blocks.3.*"])
    assert chosen == ["blocks.3.conv1.weight", "blocks.3.conv2.weight"]
    assert "blocks.3.shortcut.0.weight" in model.never_prune


def test_conv1d_and_conv3d_are_prunable_by_default():
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Conv3d(3, 4, 1), nn.Linear(4, 2))
    assert prunable_parameters(model) == ["0.weight", "1.weight", "2.weight"]
    assert [is_conv_parameter(model, n) for n in prunable_parameters(model)] == [True, True, False]
    assert prunable_parameters(nn.Linear(3, 2)) == ["weight"]
    assert not is_conv_parameter(nn.Linear(3, 2), "weight")


def test_names_of_a_torch_pruned_module_are_the_unpruned_ones():
    model = SmallBNNet()
    before = prunable_parameters(model)
    prune.l1_unstructured(model.body[0], "weight", amount=0.5)
    assert "body.0.weight_orig" in dict(model.named_parameters())
    assert prunable_parameters(model) == before
    assert prunable_parameters(model, include="body.0.weight") == ["body.0.weight"]
    t = prunable_tensors(model)["body.0.weight"]
    assert torch.equal(t, model.body[0].weight_orig * model.body[0].weight_mask)
    assert int((t == 0).sum()) == 8 * 3 * 9 // 2
