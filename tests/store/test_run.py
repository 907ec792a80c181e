"""The run directory (lth.store.run): one per configuration, locked, refusing another
configuration, and holding each unit's files with result.json written last."""

from __future__ import annotations

import json

import pytest
import torch

from lth.config import ExperimentConfig, config_hash, get_preset
from lth.store import RunStore, StoreError, UnitRecord, read_json, torch_load


def make_cfg(**over) -> ExperimentConfig:
    d = get_preset("digits-quick").to_dict()
    d["train"].update(iterations=120, eval_every=40)
    d["lottery"].update(levels=3, trials=1, branches=("ticket", "reinit", "random_mask"))
    for k, v in over.items():
        sec, name = k.split("__")
        d[sec][name] = v
    return ExperimentConfig.from_dict(d)


METRICS = [{"iteration": 0, "val_loss": 0.5, "val_accuracy": 0.8, "test_accuracy": 0.79},
           {"iteration": 40, "val_loss": 0.3, "val_accuracy": 0.9, "test_accuracy": 0.9},
           {"iteration": 80, "val_loss": 0.35, "val_accuracy": 0.88, "test_accuracy": 0.89}]


def record(trial: int, level: int, branch: str) -> UnitRecord:
    """What training ``METRICS`` records: early stop at 40, final at 80."""
    return UnitRecord.from_metrics(trial, level, branch, 0.8 ** level, METRICS)


def finish(store: RunStore, trial: int, level: int, branch: str, **files) -> UnitRecord:
    """Finish a unit the way the driver does: its metrics, weights and the inputs it started from."""
    if store.load_theta0(trial) is None:
        store.save_theta0(trial, {"w": torch.full((2,), float(trial))})
    if level > 0 and store.load_level_mask(trial, level) is None:
        store.save_level_mask(trial, level, {"w": torch.tensor([True, level < 2])})
    inputs = [store.theta0_path(trial)] + ([store.level_mask_path(trial, level)] if level else [])
    rec = record(trial, level, branch)
    store.finish_unit(rec, metrics=METRICS, final_state=files.pop("final_state", {"w": torch.ones(2)}),
                      inputs=inputs, **files)
    return rec


@pytest.fixture
def run_dir(tmp_path):
    """A run directory holding one finished unit."""
    cfg = make_cfg()
    with RunStore.open(cfg, root=tmp_path) as store:
        finish(store, 0, 0, "ticket")
        return cfg, store.path


def test_the_run_directory_is_named_by_the_config_and_holds_it(tmp_path):
    cfg = make_cfg()
    with RunStore.open(cfg, root=tmp_path) as store:
        assert store.path == tmp_path / f"{cfg.name}-{config_hash(cfg)}"
        assert ExperimentConfig.from_dict(read_json(store.path / "config.json")) == cfg


def test_different_config_in_same_directory_is_refused_with_the_differing_fields(run_dir):
    cfg, path = run_dir
    other = make_cfg(train__lr=0.01)
    with pytest.raises(StoreError) as e:
        RunStore.open(other, run_dir=path)
    assert "train.lr" in str(e.value) and "0.0012" in str(e.value)
    RunStore.open(cfg, run_dir=path).release_lock()  # the refusal released the lock


def test_second_process_on_the_same_run_directory_is_refused(run_dir):
    cfg, path = run_dir
    with RunStore.open(cfg, run_dir=path), pytest.raises(StoreError, match="in use by another lth process"):
        RunStore.open(cfg, run_dir=path)
    RunStore.open(cfg, run_dir=path).release_lock()  # free again once the first one closed


def test_a_finished_unit_has_its_files_no_checkpoint_and_a_summary_line(tmp_path):
    cfg = make_cfg()
    with RunStore.open(cfg, root=tmp_path) as store:
        udir = store.unit_dir(0, 1, "random_mask")
        store.save_checkpoints([udir], [{"step": 50}])
        assert store.load_checkpoint(0, 1, "random_mask") == {"step": 50}
        assert not store.is_done(0, 1, "random_mask")
        own = {"w": torch.tensor([True, False])}
        finish(store, 0, 1, "random_mask", final_state={"w": torch.tensor([1.0, 0.0])}, own_mask=own)
        assert store.is_done(0, 1, "random_mask")
        assert store.load_checkpoint(0, 1, "random_mask") is None
        assert torch.equal(store.load_unit_mask(0, 1, "random_mask")["w"], own["w"])
        assert torch.equal(store.load_final(0, 1, "random_mask")["w"], torch.tensor([1.0, 0.0]))
        lines = (udir / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["iteration"] for line in lines] == [0, 40, 80]
        assert store.record(0, 1, "random_mask") == record(0, 1, "random_mask")
        assert read_json(store.path / "summary.json") == [record(0, 1, "random_mask").to_dict()]


def test_records_and_the_summary_are_sorted_by_trial_level_branch(tmp_path):
    with RunStore.open(make_cfg(), root=tmp_path) as store:
        for key in [(1, 0, "ticket"), (0, 1, "reinit"), (0, 0, "ticket"), (0, 1, "random_mask")]:
            finish(store, *key)
        want = [(0, 0, "ticket"), (0, 1, "random_mask"), (0, 1, "reinit"), (1, 0, "ticket")]
        assert [r.key for r in store.records()] == want
        assert [r.key for r in store.write_summary()] == want
        assert [tuple(d[k] for k in ("trial", "level", "branch"))
                for d in read_json(store.path / "summary.json")] == want


def test_missing_state_reads_as_none_and_a_missing_rewind_is_a_clear_error(tmp_path):
    with RunStore.open(make_cfg(), root=tmp_path) as store:
        assert store.load_theta0(0) is None and store.load_level_mask(0, 1) is None
        assert store.load_unit_mask(0, 1, "random_mask") is None and store.load_checkpoint(0, 0, "ticket") is None
        with pytest.raises(StoreError, match="rewind.pt is missing"):
            store.load_rewind(0)
        theta0 = {"w": torch.randn(3)}
        store.save_theta0(0, theta0)
        assert torch.equal(store.load_theta0(0)["w"], theta0["w"])
        assert torch.equal(torch_load(store.trial_dir(0) / "theta0.pt")["w"], theta0["w"])


def test_a_group_checkpoint_is_committed_whole_or_not_at_all(tmp_path):
    cfg = make_cfg()
    with RunStore.open(cfg, root=tmp_path) as store:
        dirs = [store.unit_dir(0, 1, b) for b in ("ticket", "reinit")]
        store.save_checkpoints(dirs, [{"step": 50, "unit": 0}, {"step": 50, "unit": 1}])
        assert [torch_load(d / "checkpoint.pt") for d in dirs] == [{"step": 50, "unit": 0}, {"step": 50, "unit": 1}]
        assert not list(store.path.rglob("checkpoint.next.pt"))
        assert not (store.path / "checkpoint-commit.json").exists()
        path = store.path
    # a process killed after the commit record: the next open finishes the renames
    torch.save({"step": 100, "unit": 0}, dirs[0] / "checkpoint.next.pt")
    torch.save({"step": 100, "unit": 1}, dirs[1] / "checkpoint.next.pt")
    (path / "checkpoint-commit.json").write_text(json.dumps([str(d.relative_to(path)) for d in dirs]))
    with RunStore.open(cfg, run_dir=path):
        assert [torch_load(d / "checkpoint.pt")["step"] for d in dirs] == [100, 100]
        assert not (path / "checkpoint-commit.json").exists()
    # killed before it: the .next files are dropped and the old checkpoints stay
    torch.save({"step": 150, "unit": 0}, dirs[0] / "checkpoint.next.pt")
    (path / ".checkpoint.pt.123.tmp").write_bytes(b"half")
    with RunStore.open(cfg, run_dir=path):
        assert [torch_load(d / "checkpoint.pt")["step"] for d in dirs] == [100, 100]
        assert not list(path.rglob("checkpoint.next.pt"))
        assert not list(path.rglob("*.tmp"))  # a killed writer's temporary file is removed
