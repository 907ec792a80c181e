"""``lth models``: a parameter-count table of every registered model, from the data registry's shapes."""

from __future__ import annotations

import pytest

from lth.cli import main
from lth.models import MODELS


def _table(capsys, *args: str) -> dict[str, list[str]]:
    assert main(["models", *args]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["model", "data", "set", "input", "total", "prunable", "conv", "fc", "output", "dense"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:] if line.split()[0] in MODELS}
    assert list(rows) == list(MODELS)  # every registered model, in registration order
    return rows


def test_default_counts_each_model_on_its_presets_data_set(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LTH_DATA", str(tmp_path))  # an empty data root: no data file is needed
    rows = _table(capsys)
    # data set, input, total, prunable, conv, fc, output, dense: written out from the layer lists
    assert rows["lenet300"] == ["mnist", "1x28x28", "266,610", "266,200", "0", "265,200", "1,000", "0"]
    assert rows["mlp-100-50"] == ["digits", "1x8x8", "12,060", "11,900", "0", "11,400", "500", "0"]
    assert rows["conv2"] == ["cifar-10", "3x32x32", "4,301,642", "4,300,992", "38,592", "4,259,840", "2,560", "0"]
    assert rows["conv6-dropout"] == ["cifar-10", "3x32x32", "2,262,602", "2,261,184", "1,144,512", "1,114,112",
                                     "2,560", "0"]
    assert rows["resnet20"] == ["cifar-10", "3x32x32", "272,474", "268,336", "267,696", "0", "640", "2,560"]
    assert rows["vgg19"] == ["cifar-10", "3x32x32", "20,040,522", "20,024,000", "20,018,880", "0", "5,120", "0"]
    assert rows["vgg16"] == ["cifar-10", "3x32x32", "14,728,266", "14,715,584", "14,710,464", "0", "5,120", "0"]


@pytest.mark.parametrize("spelling", ["mnist", "MNIST", "fashion_mnist"])
def test_one_data_set_for_every_model(capsys, spelling):
    rows = _table(capsys, "--dataset", spelling)
    assert {r[1] for r in rows.values()} == {"1x28x28"}
    assert rows["conv6"][2:] == ["1,802,698", "1,801,280", "1,143,360", "655,360", "2,560", "0"]
    assert rows["lenet300"][3] == "266,200"
    assert rows["vgg19"][4] == "20,017,728"


def test_a_model_that_cannot_take_the_input_says_why_and_the_others_are_counted(capsys):
    rows = _table(capsys, "--dataset", "digits")
    for name in ("vgg16", "vgg19"):
        assert " ".join(rows[name][2:]).startswith("does not fit: input (1, 8, 8) is too small"), rows[name]
    assert rows["mlp-100-50"][3] == "11,900" and rows["resnet20"][-1] == "2,560"


def test_a_model_without_a_preset_asks_for_a_data_set(capsys):
    from torch import nn

    MODELS["test-no-preset"] = lambda shape, k: nn.Sequential(nn.Flatten(), nn.Linear(784, k))
    try:
        assert main(["models"]) == 0
        line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("test-no-preset")]
        assert len(line) == 1 and line[0].endswith("no preset trains this model: pass --dataset NAME")
        rows = _table(capsys, "--dataset", "mnist")
        assert rows["test-no-preset"][2:] == ["7,850", "7,840", "0", "0", "7,840", "0"]
    finally:
        del MODELS["test-no-preset"]


def test_unknown_data_set_is_one_line_with_status_2(capsys):
    assert main(["models", "--dataset", "imagenet"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("lth: error: --dataset:")
    assert "'imagenet'" in err and "cifar-10" in err and "mnist" in err


def test_help_names_the_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["models", "--help"])
    assert e.value.code == 0 and "--dataset" in capsys.readouterr().out
