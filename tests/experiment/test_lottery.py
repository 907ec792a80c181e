"""The IMP driver (lth.experiment.lottery) end to end on real data (scikit-learn digits): masks,
starts and records of every unit, resuming, extending and repeating a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lth.config import ExperimentConfig, config_hash, get_preset
from lth.experiment import Lottery, UnitKey, expected_weights_remaining, layer_rates
from lth.models import build_model, prunable_tensors
from lth.pruning import density, full_mask, is_nested, keep_counts_layerwise
from lth.seeds import derive_seed
from lth.store import RunStore, UnitRecord, torch_load
from lth.training import train


def make_cfg(**over) -> ExperimentConfig:
    d = get_preset("digits-quick").to_dict()
    d["train"].update(iterations=120, eval_every=40)
    d["lottery"].update(levels=3, trials=1, branches=("ticket", "reinit", "random_mask"))
    d["runtime"].update(checkpoint_every=50)
    for k, v in over.items():
        sec, name = k.split("__")
        d[sec][name] = v
    return ExperimentConfig.from_dict(d)


def run(cfg, root, digits, **kw):
    with RunStore.open(cfg, root=root, **kw) as store:
        records = Lottery(cfg, store, digits, log=lambda s: None).run()
        return store.path, records


def without_seconds(records: list[UnitRecord]) -> list[dict]:
    return [{k: v for k, v in r.to_dict().items() if k != "train_seconds"} for r in records]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits):
    cfg = make_cfg()
    path, records = run(cfg, tmp_path_factory.mktemp("runs"), digits)
    return cfg, path, records


def masks(path: Path, trial: int = 0) -> dict[int, dict[str, torch.Tensor]]:
    return {int(p.parent.name.split("_")[1]): torch_load(p)
            for p in sorted((path / f"trial_{trial}").glob("level_*/mask.pt"))}


def test_summary_has_one_record_per_unit_with_required_fields(finished):
    cfg, path, records = finished
    assert all(isinstance(r, UnitRecord) for r in records)
    summary = json.loads((path / "summary.json").read_text())
    assert summary == [r.to_dict() for r in records]
    assert [UnitRecord.from_dict(s) for s in summary] == records
    assert len(summary) == 1 + 3 * 3
    need = {"trial", "level", "branch", "weights_remaining", "early_stop_iteration",
            "early_stop_test_accuracy", "final_test_accuracy", "min_val_loss"}
    for r in summary:
        assert need <= set(r), r
        assert r["status"] == "ok"
        hist = [json.loads(line) for line in
                (path / f"trial_0/level_{r['level']}/{r['branch']}/metrics.jsonl").read_text().splitlines()]
        best = min(hist, key=lambda h: h["val_loss"])
        assert r["early_stop_iteration"] == best["iteration"]
        assert r["early_stop_test_accuracy"] == best["test_accuracy"]
        assert r["min_val_loss"] == best["val_loss"]
        assert r["final_test_accuracy"] == hist[-1]["test_accuracy"]


def test_masks_are_nested_and_follow_the_counting_rule(finished, digits):
    cfg, path, _ = finished
    ms = masks(path)
    model = build_model(cfg.model.name, digits.input_shape, digits.num_classes)
    rates = layer_rates(model, cfg)
    assert rates["out.weight"] == pytest.approx(cfg.prune.rate / 2)
    prev = None
    for level in sorted(ms):
        m = ms[level]
        assert density(m) == pytest.approx(expected_weights_remaining(cfg, model, level))
        if prev is not None:
            assert is_nested(m, prev)
            want = keep_counts_layerwise(prev, rates)
            assert {n: int(t.sum()) for n, t in m.items()} == want
        prev = m


def test_level_mask_prunes_the_smallest_trained_weights_of_the_previous_ticket(finished):
    _, path, _ = finished
    m1, m2 = masks(path)[1], masks(path)[2]
    trained = torch_load(path / "trial_0/level_1/ticket/final.pt")
    for n in m2:
        newly_pruned = m1[n] & ~m2[n]
        kept = m2[n]
        assert trained[n][newly_pruned].abs().max() <= trained[n][kept].abs().min()


def plain_evaluation(model, x, y) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of one model over a whole split (an independent reference)."""
    model.eval()
    with torch.no_grad():
        out = model(x)
    loss = F.cross_entropy(out, y, reduction="sum").double().item() / x.shape[0]
    return loss, int((out.argmax(1) == y).sum()) / x.shape[0]


def test_ticket_starts_from_theta0_under_the_mask_bit_for_bit(finished, digits):
    cfg, path, records = finished
    theta0 = torch_load(path / "trial_0/theta0.pt")
    mask = masks(path)[2]
    model = build_model(cfg.model.name, digits.input_shape, digits.num_classes)
    with RunStore.open(cfg, run_dir=path) as store:
        spec = Lottery(cfg, store, digits, log=lambda s: None).exp.unit_spec(UnitKey(0, 2, "ticket"), mask, theta0)
    for n in mask:
        assert torch.equal(spec.start_state[n], theta0[n])
    # Observable check: the iteration-0 evaluation recorded for the level-2 ticket is exactly that
    # of theta0 * mask.
    state = {k: (v * mask[k] if k in mask else v) for k, v in theta0.items()}
    model.load_state_dict(state)
    vl, va = plain_evaluation(model, digits.val_x, digits.val_y)
    first = json.loads((path / "trial_0/level_2/ticket/metrics.jsonl").read_text().splitlines()[0])
    # (up to the rounding of a batched vs. a single matrix product: units train vectorised)
    assert first["iteration"] == 0 and first["val_accuracy"] == va
    assert first["val_loss"] == pytest.approx(vl, rel=1e-6)
    # and the pruned weights are still exactly zero after training
    final = torch_load(path / "trial_0/level_2/ticket/final.pt")
    for n, m in mask.items():
        assert torch.count_nonzero(final[n][~m]) == 0


def test_reinit_keeps_the_mask_but_changes_the_values(finished, digits):
    cfg, path, _ = finished
    theta0 = torch_load(path / "trial_0/theta0.pt")
    mask = masks(path)[1]
    with RunStore.open(cfg, run_dir=path) as store:
        lot = Lottery(cfg, store, digits, log=lambda s: None)
        spec = lot.exp.unit_spec(UnitKey(0, 1, "reinit"), mask, theta0)
        again = lot.exp.unit_spec(UnitKey(0, 1, "reinit"), mask, theta0)
    assert spec.mask is mask
    for n in mask:
        assert not torch.equal(spec.start_state[n], theta0[n])
        assert torch.equal(spec.start_state[n], again.start_state[n])  # seeded
        # same distribution: Glorot normal std within 10%
        assert spec.start_state[n].std().item() == pytest.approx(theta0[n].std().item(), rel=0.1)
    final = torch_load(path / "trial_0/level_1/reinit/final.pt")
    for n, m in mask.items():
        assert torch.count_nonzero(final[n][~m]) == 0


def test_random_mask_keeps_per_layer_counts_and_theta0(finished):
    _, path, _ = finished
    for level, m in masks(path).items():
        if level == 0:
            continue
        rm = torch_load(path / f"trial_0/level_{level}/random_mask/mask.pt")
        for n in m:
            assert int(rm[n].sum()) == int(m[n].sum())
            assert not torch.equal(rm[n], m[n])
        final = torch_load(path / f"trial_0/level_{level}/random_mask/final.pt")
        for n in rm:
            assert torch.count_nonzero(final[n][~rm[n]]) == 0


def test_unit_mask_is_the_units_own_or_its_levels(finished, digits):
    cfg, path, _ = finished
    with RunStore.open(cfg, run_dir=path) as store:
        exp = Lottery(cfg, store, digits, log=lambda s: None).exp
        for level in (1, 2, 3):
            for branch, file in (("ticket", f"level_{level}/mask.pt"), ("reinit", f"level_{level}/mask.pt"),
                                 ("random_mask", f"level_{level}/random_mask/mask.pt")):
                want = torch_load(path / "trial_0" / file)
                got = exp.unit_mask(UnitKey(0, level, branch))
                assert all(torch.equal(got[n], want[n]) for n in want), (level, branch)
        dense = exp.unit_mask(UnitKey(0, 0, "ticket"))
        assert all(bool(t.all()) for t in dense.values())


def test_rerun_skips_finished_units_and_never_rewrites_them(finished, digits):
    cfg, path, records = finished
    stamps = {p: p.stat().st_mtime_ns for p in path.glob("trial_*/level_*/*/result.json")}
    lines: list[str] = []
    with RunStore.open(cfg, run_dir=path) as store:
        again = Lottery(cfg, store, digits, log=lines.append).run()
    assert again == records
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert "10 already finished, 0 to train" in lines[0]


def test_more_levels_and_trials_extend_the_same_run_directory(tmp_path, digits):
    small = make_cfg(lottery__levels=1, lottery__branches=("ticket",))
    p1, r1 = run(small, tmp_path, digits)
    bigger = make_cfg(lottery__levels=2, lottery__trials=2, lottery__branches=("ticket", "reinit"))
    p2, r2 = run(bigger, tmp_path, digits)
    assert p1 == p2
    assert r1[0] in r2 and len(r2) == 2 * (1 + 2 * 2)


class Crash(Exception):
    pass


def crash_at_checkpoint_write(monkeypatch, n: int) -> None:
    """Raise Crash right after the n-th checkpoint file (checkpoint.pt or a group's
    checkpoint.next.pt) has been written."""
    from lth.store import run as run_mod  # where RunStore looks atomic_torch_save up

    real_save = run_mod.atomic_torch_save
    calls = {"n": 0}

    def crashing_save(path, obj):
        digest = real_save(path, obj)
        if Path(path).name.startswith("checkpoint"):
            calls["n"] += 1
            if calls["n"] == n:
                monkeypatch.setattr(run_mod, "atomic_torch_save", real_save)
                raise Crash
        return digest

    monkeypatch.setattr(run_mod, "atomic_torch_save", crashing_save)


def test_interrupted_run_resumes_to_identical_results(tmp_path, digits, monkeypatch):
    cfg = make_cfg(lottery__levels=2)
    ref_path, ref = run(cfg, tmp_path / "ref", digits)
    # level 0 writes 2 checkpoints; level 1's three units 3 at iteration 50 (committed together)
    # and the crash comes after the third of its next three, at iteration 100
    crash_at_checkpoint_write(monkeypatch, 8)
    with pytest.raises(Crash):
        run(cfg, tmp_path / "b", digits)
    path = next((tmp_path / "b").iterdir())
    assert list(path.glob("trial_0/level_*/*/checkpoint.pt")), "the crash left a checkpoint"
    lines: list[str] = []
    with RunStore.open(cfg, run_dir=path) as store:
        resumed = Lottery(cfg, store, digits, log=lines.append).run()
    assert any("resuming from checkpoint" in line for line in lines)
    assert without_seconds(resumed) == without_seconds(ref)
    for level, m in masks(ref_path).items():
        other = masks(path)[level]
        assert all(torch.equal(m[n], other[n]) for n in m)
    assert not list(path.glob("trial_*/level_*/*/checkpoint.pt"))


def test_rewinding_starts_tickets_from_theta_k(tmp_path, digits):
    cfg = make_cfg(lottery__rewind_iteration=40, lottery__levels=1, lottery__branches=("ticket",))
    path, records = run(cfg, tmp_path, digits)
    theta_k = torch_load(path / "trial_0/rewind.pt")
    theta0 = torch_load(path / "trial_0/theta0.pt")
    assert any(not torch.equal(theta_k[n], theta0[n]) for n in theta0)
    # theta_k is the dense network after exactly k iterations: retrain dense to k independently
    # (plain autograd on the model: the module engine).
    model = build_model(cfg.model.name, digits.input_shape, digits.num_classes)
    model.load_state_dict(theta0)
    d = cfg.to_dict()
    d["train"]["iterations"] = 40
    short = ExperimentConfig.from_dict({**d, "lottery": {**d["lottery"], "rewind_iteration": 0}})
    res = train(model, full_mask(prunable_tensors(model)), digits,
                short.train, data_seed=derive_seed(cfg.lottery.seed, "data", 0), engine="module")
    for n in theta_k:  # (the run trains MLPs on the vectorised engine: equal up to rounding)
        torch.testing.assert_close(res.final_state[n], theta_k[n], rtol=1e-5, atol=1e-6)
    # the level-1 ticket's first evaluation is at iteration k and training continues to T
    hist = (path / "trial_0/level_1/ticket/metrics.jsonl").read_text().splitlines()
    assert json.loads(hist[0])["iteration"] == 40
    assert json.loads(hist[-1])["iteration"] == cfg.train.iterations


def test_one_shot_prunes_the_dense_network_to_each_levels_size(tmp_path, digits):
    cfg = make_cfg(lottery__one_shot=True, lottery__levels=2, lottery__branches=("ticket",))
    path, _ = run(cfg, tmp_path, digits)
    ms = masks(path)
    model = build_model(cfg.model.name, digits.input_shape, digits.num_classes)
    dense_final = torch_load(path / "trial_0/level_0/ticket/final.pt")
    for level in (1, 2):
        assert density(ms[level]) == pytest.approx(expected_weights_remaining(cfg, model, level))
        for n, m in ms[level].items():  # pruned by magnitude of the *dense* trained weights
            assert dense_final[n][~m].abs().max() <= dense_final[n][m].abs().min()


def test_divergence_is_recorded_as_failed_and_other_units_continue(tmp_path, digits):
    cfg = make_cfg(train__lr=1e6, train__optimizer="sgd", train__momentum=0.0, lottery__levels=1)
    path, records = run(cfg, tmp_path, digits)
    assert records[0].status == "failed" and not records[0].ok and records[0].error
    assert records[0].early_stop_test_accuracy is None
    stored = json.loads((path / "trial_0/level_0/ticket/result.json").read_text())
    assert stored["status"] == "failed" and "error" in stored
    assert "early_stop_test_accuracy" not in stored


def test_a_finished_run_reports_mean_min_max_over_trials_and_plots(tmp_path, digits):
    from lth.report import aggregate, markdown_table, plot

    cfg = make_cfg(lottery__levels=1, lottery__trials=2, lottery__branches=("ticket", "reinit"))
    path, records = run(cfg, tmp_path, digits)
    rows = {(r.level, r.branch): r for r in aggregate(records)}
    assert set(rows) == {(0, "dense"), (1, "ticket"), (1, "reinit")}
    accs = [100 * r.early_stop_test_accuracy for r in records if r.level == 1 and r.branch == "reinit"]
    s = rows[(1, "reinit")].early_stop_test_accuracy
    assert (s.mean, s.lo, s.hi, s.n) == (pytest.approx(sum(accs) / 2), min(accs), max(accs), 2)
    # the records as stored (dicts) aggregate to the same rows
    assert aggregate([r.to_dict() for r in records]) == aggregate(records)
    md = markdown_table(list(rows.values()))
    assert md.count("\n") == 2 + 3 and "| 1 | 80.42 | reinit |" in md
    png = plot(path, tmp_path / "fig.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_same_config_and_seed_give_bit_identical_masks_and_metrics(tmp_path, digits):
    cfg = make_cfg(lottery__levels=2, lottery__branches=("ticket", "random_mask"))
    a, _ = run(cfg, tmp_path / "a", digits)
    b, _ = run(cfg, tmp_path / "b", digits)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.suffix in (".pt", ".jsonl"))
    assert len(files) > 10
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    other, _ = run(make_cfg(lottery__levels=2, lottery__branches=("ticket", "random_mask"),
                            lottery__seed=1), tmp_path / "c", digits)
    assert (a / "trial_0/level_2/mask.pt").read_bytes() != (other / "trial_0/level_2/mask.pt").read_bytes()


def _metrics(records):
    return {r.key: r for r in records}


def test_vectorised_levels_equal_one_unit_at_a_time(tmp_path, digits):
    """--parallel-units: training a level's units together gives the one-at-a-time results."""
    cfg1 = make_cfg(lottery__trials=2, lottery__levels=2, runtime__parallel_units=1)
    cfgn = make_cfg(lottery__trials=2, lottery__levels=2, runtime__parallel_units=0)
    p1, r1 = run(cfg1, tmp_path / "one", digits)
    lines: list[str] = []
    with RunStore.open(cfgn, root=tmp_path / "many") as store:
        rn = Lottery(cfgn, store, digits, log=lines.append).run()
        pn = store.path
    assert any("6 units at once" in line for line in lines)  # 2 trials x 3 branches per level
    a, b = _metrics(r1), _metrics(rn)
    assert a.keys() == b.keys() and len(a) == 2 * (1 + 2 * 3)
    for key in a:
        assert b[key].weights_remaining == a[key].weights_remaining
        assert b[key].min_val_loss == pytest.approx(a[key].min_val_loss, rel=1e-4)
        assert b[key].early_stop_test_accuracy == pytest.approx(a[key].early_stop_test_accuracy, abs=0.006)
    for trial in (0, 1):
        for level, m in masks(p1, trial).items():
            assert all(torch.equal(m[n], masks(pn, trial)[level][n]) for n in m)


def test_a_run_interrupted_while_vectorised_resumes_one_unit_at_a_time(tmp_path, digits, monkeypatch):
    cfg = make_cfg(lottery__trials=2, lottery__levels=1)
    ref_path, ref = run(cfg, tmp_path / "ref", digits)
    # level 0 (2 units) writes 2 + 2; level 1 (6 units) commits 6 at iteration 50, then the crash
    # comes after 3 of its 6 at iteration 100: a half-written group checkpoint
    crash_at_checkpoint_write(monkeypatch, 13)
    with pytest.raises(Crash):
        run(cfg, tmp_path / "b", digits)
    path = next((tmp_path / "b").iterdir())
    assert len(list(path.glob("trial_*/level_1/*/checkpoint.next.pt"))) == 3
    assert len(list(path.glob("trial_*/level_1/*/checkpoint.pt"))) == 6
    one = make_cfg(lottery__trials=2, lottery__levels=1, runtime__parallel_units=1)
    lines: list[str] = []
    with RunStore.open(one, run_dir=path) as store:
        resumed = Lottery(one, store, digits, log=lines.append).run()
    # the unfinished group checkpoint was discarded: all six resume from iteration 50
    assert sum(line.endswith("resuming from checkpoint at iteration 50") for line in lines) == 6
    assert not list(path.glob("trial_*/level_*/*/checkpoint.next.pt"))
    a, b = _metrics(ref), _metrics(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert b[key].min_val_loss == pytest.approx(a[key].min_val_loss, rel=1e-4)
    assert not list(path.glob("trial_*/level_*/*/checkpoint.pt"))


def lottery_cfg(test_eval: str) -> ExperimentConfig:
    d = get_preset("digits-quick").to_dict()
    d["train"].update(iterations=400, eval_every=20)
    d["lottery"].update(levels=2, trials=2, branches=("ticket", "reinit", "random_mask"))
    d["runtime"].update(test_eval=test_eval)
    return ExperimentConfig.from_dict(d)


def test_lottery_results_are_identical_with_best_and_every(tmp_path, digits):
    out = {}
    lines = []
    for mode in ("every", "best"):
        cfg = lottery_cfg(mode)
        with RunStore.open(cfg, root=tmp_path / mode) as store:
            out[mode] = Lottery(cfg, store, digits, log=lines.append).run()
            path = store.path
    assert config_hash(lottery_cfg("best")) == config_hash(lottery_cfg("every"))
    assert without_seconds(out["best"]) == without_seconds(out["every"])
    tested = untested = 0
    for f in path.glob("trial_*/level_*/*/metrics.jsonl"):
        for line in f.read_text().splitlines():
            h = json.loads(line)
            tested += h["test_accuracy"] is not None
            untested += h["test_accuracy"] is None
    assert tested and untested  # the best run's histories record the skipped points as null
    assert any("done: early stop" in s for s in lines)
