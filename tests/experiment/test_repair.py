"""Rerunning on a damaged run directory (lth.experiment.lottery.Lottery.repair and the integrity
rules of lth.store.run): exactly the damaged work is redone, the log says what and why, and the
result equals the undamaged run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lth.config import ExperimentConfig, get_preset
from lth.experiment import Experiment, Lottery, audit_run, next_mask
from lth.store import RunStore, torch_load


def make_cfg(**over) -> ExperimentConfig:
    d = get_preset("digits-quick").to_dict()
    d["train"].update(iterations=120, eval_every=40)
    d["lottery"].update(levels=3, trials=2, branches=("ticket", "reinit", "random_mask"))
    d["runtime"].update(checkpoint_every=50, parallel_units=1)  # a unit retrained alone reproduces itself
    for k, v in over.items():
        sec, name = k.split("__")
        d[sec][name] = v
    return ExperimentConfig.from_dict(d)


def run(cfg, path: Path, digits) -> list[str]:
    lines: list[str] = []
    with RunStore.open(cfg, run_dir=path) as store:
        Lottery(cfg, store, digits, log=lines.append).run()
    return lines


def contents(path: Path) -> dict[str, bytes]:
    """Every file that holds a result, with result.json's wall time left out."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and p.name not in (".lock",):
            data = p.read_bytes()
            if p.name == "result.json":
                d = json.loads(data)
                d.pop("train_seconds", None)
                data = json.dumps(d, sort_keys=True).encode()
            if p.name == "summary.json":
                data = json.dumps([{k: v for k, v in r.items() if k != "train_seconds"}
                                   for r in json.loads(data)]).encode()
            out[str(p.relative_to(path))] = data
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits):
    out = {}
    for name, cfg in (("reset", make_cfg()), ("rewind", make_cfg(lottery__rewind_iteration=40))):
        path = tmp_path_factory.mktemp(name) / "run"
        run(cfg, path, digits)
        out[name] = (cfg, path)
    return out


def _edit_number(p: Path) -> None:
    d = json.loads(p.read_text())
    d["early_stop_test_accuracy"] = 1.0
    p.write_text(json.dumps(d))


# (run, file, damage, what the rerun must say, units it must train)
CASES = [
    ("reset", "trial_0/level_2/ticket/final.pt", "delete", "final.pt is missing", ["trial_0/level_2/ticket"]),
    ("reset", "trial_1/level_1/reinit/metrics.jsonl", "truncate", "metrics.jsonl has", ["trial_1/level_1/reinit"]),
    ("reset", "trial_0/level_3/random_mask/mask.pt", "delete", "mask.pt is missing", ["trial_0/level_3/random_mask"]),
    ("reset", "trial_1/level_2/ticket/result.json", "number", "but metrics.jsonl gives", ["trial_1/level_2/ticket"]),
    ("reset", "trial_1/level_3/reinit/result.json", "garbage", "is not valid JSON", ["trial_1/level_3/reinit"]),
    ("reset", "trial_1/theta0.pt", "garbage", "recomputed trial_1/theta0.pt: identical", []),
    ("reset", "trial_0/level_2/mask.pt", "truncate", "recomputed trial_0/level_2/mask.pt: identical", []),
    ("reset", "checksums.json", "delete", "recomputed trial_0/level_1/mask.pt: identical", []),
    ("reset", "summary.json", "number", None, []),
    ("rewind", "trial_0/rewind.pt", "garbage", "retraining the dense network", ["trial_0/level_0/ticket"]),
    ("rewind", "trial_1/level_0/ticket/final.pt", "zero", "SHA-256 mismatch", ["trial_1/level_0/ticket"]),
    ("rewind", "trial_0/theta0.pt+trial_0/rewind.pt", "delete", "retraining the dense network",
     ["trial_0/level_0/ticket"]),
]


@pytest.mark.parametrize("name, rel, damage, says, trains", CASES,
                         ids=[f"{c[0]}-{c[1].replace('/', '.')}-{c[2]}" for c in CASES])
def test_a_rerun_redoes_exactly_the_damaged_work_and_equals_the_undamaged_run(
        tmp_path, digits, reference, name, rel, damage, says, trains):
    cfg, ref = reference[name]
    path = tmp_path / "run"
    shutil.copytree(ref, path)
    target = path / rel
    if "+" in rel:  # two files at once
        for r in rel.split("+"):
            (path / r).unlink()
    elif damage == "delete":
        target.unlink()
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "garbage":
        target.write_bytes(b"\x80\x02garbage" * 7)
    elif damage == "zero":
        target.write_bytes(bytes(target.stat().st_size))
    elif damage == "number":
        if rel == "summary.json":
            d = json.loads(target.read_text())
            d[0]["early_stop_test_accuracy"] = 1.0
            target.write_text(json.dumps(d))
        else:
            _edit_number(target)
    assert audit_run(path).damaged
    lines = run(cfg, path, digits)
    if says:
        assert any(says in line for line in lines), lines
    trained = sorted(f"trial_{int(m[0]) - 1}/level_{m[1]}/{m[2]}" for line in lines
                     if "training from iteration" in line
                     for m in [line.split("[trial ")[1].split()[0].split("/")[:1]
                               + [line.split(" level ")[1].split("/")[0], line.split()[4]]])
    assert trained == trains, lines
    assert contents(path) == contents(ref)
    assert not audit_run(path).damaged


def test_after_a_grouped_retrain_every_level_mask_is_pruned_from_the_current_ticket(tmp_path, digits):
    """Units trained together differ from one trained alone in the last bits, so a retrained
    ticket may differ from the original: the masks pruned from it must follow, never go stale."""
    cfg = make_cfg(runtime__parallel_units=0, lottery__levels=4)
    path = tmp_path / "run"
    run(cfg, path, digits)
    (path / "trial_0/level_1/ticket/final.pt").unlink()
    run(cfg, path, digits)
    assert not audit_run(path).damaged
    with RunStore.open(cfg, run_dir=path) as store:
        exp = Experiment(cfg, store, digits.input_shape, digits.num_classes)
        for level in range(2, 5):
            want = next_mask(exp.new_model(), cfg, store.load_final(0, level - 1, "ticket"),
                             store.load_level_mask(0, level - 1), 1)
            have = torch_load(store.level_mask_path(0, level))
            assert all(torch.equal(want[n], have[n]) for n in want), level
