"""The run directory (lth.store.run): one per configuration, locked, refusing another
configuration, and holding each unit's files with result.json written last."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from lth.config import ExperimentConfig, config_hash, get_preset
from lth.store import DamagedFileError, RunStore, StoreError, UnitRecord, read_json, torch_load


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


# ---------------------------------------------------------------------------------------- integrity
def test_an_input_is_recorded_before_it_is_written_and_read_back_checked(tmp_path):
    with RunStore.open(make_cfg(), root=tmp_path) as store:
        store.save_theta0(0, {"w": torch.arange(3.0)})
        sums = read_json(store.path / "checksums.json")
        data = (store.trial_dir(0) / "theta0.pt").read_bytes()
        assert sums["trial_0/theta0.pt"] == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        assert torch.equal(store.load_theta0(0)["w"], torch.arange(3.0))


@pytest.mark.parametrize("damage, problem", [
    (lambda p: p.unlink(), "is missing"),
    (lambda p: p.write_bytes(p.read_bytes()[:40]), "bytes,"),
    (lambda p: p.write_bytes(bytes(len(p.read_bytes()))), "SHA-256 mismatch"),
], ids=["deleted", "truncated", "zeroed"])
def test_a_damaged_input_is_refused_naming_the_file_and_the_problem(tmp_path, damage, problem):
    cfg = make_cfg()
    with RunStore.open(cfg, root=tmp_path) as store:
        store.save_theta0(0, {"w": torch.arange(3.0)})
        store.save_level_mask(0, 1, {"w": torch.tensor([True, False])})
        path = store.path
    damage(path / "trial_0/level_1/mask.pt")
    store = RunStore(path)  # a fresh reader: nothing cached
    with pytest.raises(DamagedFileError, match=problem) as e:
        store.load_level_mask(0, 1)
    assert e.value.path == path / "trial_0/level_1/mask.pt" and "rerun the same `lth run`" in str(e.value)
    assert store.load_theta0(0) is not None  # the other input is unaffected


def test_an_unrecorded_input_is_not_trusted(tmp_path):
    with RunStore.open(make_cfg(), root=tmp_path) as store:
        store.trial_dir(0).mkdir(parents=True)
        torch.save({"w": torch.ones(2)}, store.trial_dir(0) / "theta0.pt")
        with pytest.raises(DamagedFileError, match="has no recorded checksum"):
            store.load_theta0(0)


def test_a_garbage_checksum_list_makes_every_input_unrecorded_and_says_why(tmp_path):
    with RunStore.open(make_cfg(), root=tmp_path) as store:
        store.save_theta0(0, {"w": torch.ones(2)})
        path = store.path
    (path / "checksums.json").write_text('{"trial_0/theta0.pt": {"size": "big"}}')
    store = RunStore(path)
    assert store.checksums() == {} and "checksums.json is damaged" in store.checksums_problem
    assert "has no recorded checksum" in store.input_problem(path / "trial_0/theta0.pt")


@pytest.mark.parametrize("damage, problem", [
    ("final.pt", "final.pt is missing"),
    ("metrics.jsonl", "metrics.jsonl has"),
    ("theta0", "its input trial_0/theta0.pt"),
    ("number", "final_test_accuracy = 0.5 in result.json, but metrics.jsonl gives 0.89"),
    ("files", "result.json records no final.pt"),
], ids=["final-deleted", "metrics-truncated", "input-changed", "number-edited", "checksum-removed"])
def test_a_damaged_unit_is_not_done_and_left_out_of_records_and_summary(run_dir, damage, problem):
    cfg, path = run_dir
    udir = path / "trial_0/level_0/ticket"
    if damage == "final.pt":
        (udir / "final.pt").unlink()
    elif damage == "metrics.jsonl":
        (udir / "metrics.jsonl").write_bytes((udir / "metrics.jsonl").read_bytes()[:-10])
    elif damage == "theta0":
        (path / "trial_0/theta0.pt").write_bytes(b"0" * 10)
    else:
        d = read_json(udir / "result.json")
        if damage == "number":
            d["final_test_accuracy"] = 0.5
        else:
            del d["files"]["final.pt"]
        (udir / "result.json").write_text(json.dumps(d))
    with RunStore.open(cfg, run_dir=path) as store:
        assert not store.is_done(0, 0, "ticket")
        assert any(problem in p for p in store.damaged_units()[(0, 0, "ticket")]), store.damaged_units()
        assert store.records() == [] and store.write_summary() == []
        assert read_json(path / "summary.json") == []


def test_a_retrained_ticket_makes_the_mask_pruned_from_it_stale(tmp_path):
    with RunStore.open(make_cfg(), root=tmp_path) as store:
        finish(store, 0, 0, "ticket")
        final = store.unit_dir(0, 0, "ticket") / "final.pt"
        store.save_level_mask(0, 1, {"w": torch.tensor([True, False])}, pruned_from=final)
        assert store.input_problem(store.level_mask_path(0, 1)) is None
        finish(store, 0, 0, "ticket", final_state={"w": torch.full((2,), 3.0)})  # retrained, other weights
        assert store.input_problem(store.level_mask_path(0, 1)) == (
            "was pruned from trial_0/level_0/ticket/final.pt, which has been retrained since")


def test_a_damaged_config_is_rewritten_only_where_the_directory_name_proves_it(tmp_path):
    cfg = make_cfg()
    with RunStore.open(cfg, root=tmp_path) as store:
        path = store.path
    (path / "config.json").write_bytes(b"\x00garbage")
    with RunStore.open(cfg, root=tmp_path) as store:  # <name>-<hash> of this very configuration
        assert "rewritten" in store.repaired_config
    assert ExperimentConfig.from_dict(read_json(path / "config.json")) == cfg
    other = tmp_path / "mine"
    RunStore.open(cfg, run_dir=other).release_lock()
    (other / "config.json").write_text("{")
    with pytest.raises(StoreError, match="cannot be matched to a configuration"):
        RunStore.open(cfg, run_dir=other)
