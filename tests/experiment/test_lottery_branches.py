"""The protocol variants as branches of the IMP driver, end to end on scikit-learn digits:
``finetune`` and ``lr_rewind`` (Renda, Frankle & Carbin 2020), ``oneshot`` (Frankle & Carbin 2019,
Fig. 4) and ``lottery.rewind_optimizer``: where each unit starts, with which learning rates, what it
records as its inputs, and that such runs resume exactly and detect damage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lth.config import ExperimentConfig, get_preset
from lth.experiment import Lottery, UnitKey
from lth.experiment.audit import audit_run
from lth.models import build_model
from lth.pruning import full_mask
from lth.seeds import derive_seed
from lth.store import RunStore, torch_load
from lth.training import UnitInput, learning_rate, lr_schedule, train_many

from .test_lottery import Crash, crash_at_checkpoint_write, plain_evaluation, without_seconds

K = 30  # the rewind iteration: off the evaluation grid (eval_every = 40)
NEW = ("oneshot", "finetune", "lr_rewind")


def make_cfg(**over) -> ExperimentConfig:
    d = get_preset("digits-quick").to_dict()
    # a step in the schedule, so that replaying it and holding its final value differ
    d["train"].update(iterations=120, eval_every=40, lr_milestones=(70,), lr_gamma=0.1)
    d["lottery"].update(levels=2, trials=1, rewind_iteration=K, branches=("ticket", "random_mask", *NEW))
    d["runtime"].update(checkpoint_every=50, parallel_units=1)  # one at a time: reproducible bit for bit
    for k, v in over.items():
        sec, name = k.split("__")
        d[sec][name] = v
    return ExperimentConfig.from_dict(d)


def run(cfg, root, digits, **kw):
    with RunStore.open(cfg, root=root, **kw) as store:
        records = Lottery(cfg, store, digits, log=lambda s: None).run()
        return store.path, records


def history(path: Path, level: int, branch: str) -> list[dict]:
    return [json.loads(line) for line in (path / f"trial_0/level_{level}/{branch}/metrics.jsonl").read_text()
            .splitlines()]


def result(path: Path, level: int, branch: str) -> dict:
    return json.loads((path / f"trial_0/level_{level}/{branch}/result.json").read_text())


def masked(state, mask):
    return {k: (v * mask[k] if k in mask else v) for k, v in state.items()}


def retrain(cfg, digits, start, mask, *, lr="schedule", optimizer=None):
    """A unit trained outside the driver, from ``start`` at iteration k: what the driver should
    have done for it."""
    model = build_model(cfg.model.name, digits.input_shape, digits.num_classes)
    (res,) = train_many(model, [UnitInput(start, mask, derive_seed(cfg.lottery.seed, "data", 0),
                                          optimizer=optimizer)], digits, cfg.train, start_step=K,
                        flush_denormals=cfg.runtime.flush_denormals, lr_at=lr_schedule(cfg.train, lr))
    return res


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits):
    cfg = make_cfg()
    path, records = run(cfg, tmp_path_factory.mktemp("runs"), digits)
    return cfg, path, records


def test_every_branch_curve_starts_at_its_start_point_and_records_how_it_started(finished):
    cfg, path, records = finished
    assert len(records) == 1 + 2 * 5 and all(r.ok for r in records)
    assert [h["iteration"] for h in history(path, 0, "ticket")] == [0, 40, 80, 120]
    lrs = {"ticket": "schedule", "random_mask": "schedule", "oneshot": "schedule", "finetune": "final",
           "lr_rewind": "schedule"}
    for r in records:
        if r.level == 0:
            assert (r.start_iteration, r.lr_schedule, r.optimizer_start) == (0, "schedule", "fresh")
            continue
        assert [h["iteration"] for h in history(path, r.level, r.branch)] == [K, 40, 80, 120], r.branch
        assert (r.start_iteration, r.lr_schedule, r.optimizer_start) == (K, lrs[r.branch], "fresh")
        assert result(path, r.level, r.branch)["lr_schedule"] == lrs[r.branch]


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("branch", ["finetune", "lr_rewind"])
def test_finetune_and_lr_rewind_train_on_from_the_pruned_tickets_trained_weights(finished, digits, branch, level):
    cfg, path, _ = finished
    trained = torch_load(path / f"trial_0/level_{level - 1}/ticket/final.pt")
    mask = torch_load(path / f"trial_0/level_{level}/mask.pt")
    with RunStore.open(cfg, run_dir=path) as store:
        spec = Lottery(cfg, store, digits, log=lambda s: None).exp.unit_spec(UnitKey(0, level, branch))
    assert all(torch.equal(spec.start_state[k], trained[k]) for k in trained)
    assert spec.start_step == K and spec.start_optimizer is None
    # observable: the first evaluation is that of the trained weights under the level's mask
    model = build_model(cfg.model.name, digits.input_shape, digits.num_classes)
    model.load_state_dict(masked(trained, mask))
    vl, va = plain_evaluation(model, digits.val_x, digits.val_y)
    hist = history(path, level, branch)
    assert hist[0]["val_accuracy"] == va and hist[0]["val_loss"] == pytest.approx(vl, rel=1e-6)
    # learning rates: fine-tuning holds the schedule's final value; lr rewinding replays it from k
    final_lr = learning_rate(cfg.train, cfg.train.iterations - 1)
    assert final_lr == pytest.approx(1.2e-4)
    want = ([final_lr] * 4 if branch == "finetune"
            else [learning_rate(cfg.train, s) for s in (K, 39, 79, 119)])
    assert [h["lr"] for h in hist] == want
    if branch == "lr_rewind":
        assert want[:2] == [1.2e-3, 1.2e-3] and want[2] == pytest.approx(1.2e-4)
    # the whole unit is that training, bit for bit (and its pruned weights stay zero)
    ref = retrain(cfg, digits, trained, mask, lr="final" if branch == "finetune" else "schedule")
    final = torch_load(path / f"trial_0/level_{level}/{branch}/final.pt")
    assert all(torch.equal(final[k], ref.final_state[k]) for k in final)
    assert all(torch.count_nonzero(final[n][~m]) == 0 for n, m in mask.items())
    # it records the trained weights it started from as an input
    inputs = result(path, level, branch)["inputs"]
    assert f"trial_0/level_{level - 1}/ticket/final.pt" in inputs


def numpy_oneshot_mask(dense: dict[str, torch.Tensor], counts: dict[str, int]) -> dict[str, np.ndarray]:
    """Reference: in each layer, the ``counts[layer]`` largest-magnitude weights of the dense network."""
    out = {}
    for name, c in counts.items():
        w = np.abs(dense[name].numpy().ravel())
        keep = np.zeros(w.size, dtype=bool)
        keep[np.argsort(-w, kind="stable")[:c]] = True
        out[name] = keep.reshape(dense[name].shape)
    return out


def test_oneshot_prunes_the_trained_dense_network_to_the_levels_per_layer_counts(finished, digits):
    cfg, path, _ = finished
    dense = torch_load(path / "trial_0/level_0/ticket/final.pt")
    theta_k = torch_load(path / "trial_0/rewind.pt")
    for level in (1, 2):
        imp = torch_load(path / f"trial_0/level_{level}/mask.pt")
        own = torch_load(path / f"trial_0/level_{level}/oneshot/mask.pt")
        counts = {n: int(m.sum()) for n, m in imp.items()}
        assert {n: int(m.sum()) for n, m in own.items()} == counts
        ref = numpy_oneshot_mask(dense, counts)
        assert all(np.array_equal(own[n].numpy(), ref[n]) for n in own)
        # level 1 is pruned from the dense network either way; level 2 of IMP from the level-1 ticket
        assert all(torch.equal(own[n], imp[n]) for n in imp) == (level == 1)
        # survivors rewound to theta_k: the first evaluation is theta_k under the one-shot mask
        model = build_model(cfg.model.name, digits.input_shape, digits.num_classes)
        model.load_state_dict(masked(theta_k, own))
        vl, va = plain_evaluation(model, digits.val_x, digits.val_y)
        first = history(path, level, "oneshot")[0]
        assert first["iteration"] == K and first["val_accuracy"] == va
        assert first["val_loss"] == pytest.approx(vl, rel=1e-6)
        assert "trial_0/level_0/ticket/final.pt" in result(path, level, "oneshot")["inputs"]
        final = torch_load(path / f"trial_0/level_{level}/oneshot/final.pt")
        assert all(torch.equal(final[k], v) for k, v in retrain(cfg, digits, theta_k, own).final_state.items())


def test_damage_to_a_finetune_units_trained_input_is_detected_and_repaired(tmp_path, digits):
    cfg = make_cfg(lottery__branches=("ticket", "finetune"))
    path, ref = run(cfg, tmp_path, digits)
    source = path / "trial_0/level_1/ticket/final.pt"
    data = bytearray(source.read_bytes())
    data[-100] ^= 0xFF
    source.write_bytes(bytes(data))
    store = RunStore(path)
    problems = store.unit_problems(0, 2, "finetune")
    assert any(p.startswith("its input trial_0/level_1/ticket/final.pt") for p in problems), problems
    audit = audit_run(path)
    assert audit.damaged and (0, 2, "finetune") in audit.units_damaged and (0, 1, "ticket") in audit.units_damaged
    # a rerun retrains the damaged ticket; it comes out identical (same machine, same numbers), so
    # the finetune unit that started from it is intact again and stays finished
    lines: list[str] = []
    with RunStore.open(cfg, run_dir=path) as s:
        again = Lottery(cfg, s, digits, log=lines.append).run()
    assert any("level 1 ticket" in line and "retraining" in line for line in lines), lines
    assert not any("finetune" in line and "retraining" in line for line in lines), lines
    assert without_seconds(again) == without_seconds(ref)
    assert not audit_run(path).damaged


def test_a_finetune_unit_whose_trained_input_was_retrained_to_other_weights_is_not_intact(tmp_path, digits):
    cfg = make_cfg(lottery__branches=("ticket", "lr_rewind"), lottery__levels=1)
    path, _ = run(cfg, tmp_path, digits)
    store = RunStore(path)
    assert store.unit_problems(0, 1, "lr_rewind") == []
    # the dense ticket "retrained" to other weights: a valid, recorded final.pt that differs
    rec = store.record(0, 0, "ticket")
    other = {k: v + 1 for k, v in torch_load(path / "trial_0/level_0/ticket/final.pt").items()}
    metrics = [json.loads(line) for line in (path / "trial_0/level_0/ticket/metrics.jsonl").read_text().splitlines()]
    store.finish_unit(rec, metrics=metrics, final_state=other, inputs=[store.theta0_path(0)])
    assert store.unit_problems(0, 0, "ticket") == []
    problems = store.unit_problems(0, 1, "lr_rewind")
    assert any("trial_0/level_0/ticket/final.pt is no longer the file it started from" in p for p in problems)


def test_a_run_with_the_new_branches_resumes_exactly_after_an_interruption(tmp_path, digits, monkeypatch):
    # automatic grouping: the units of a level train together where their learning rates agree
    cfg = make_cfg(runtime__parallel_units=0)
    ref_path, ref = run(cfg, tmp_path / "ref", digits)
    # level 0 writes 2 checkpoints; at level 1 finetune (its own group: another learning rate)
    # 2, then the other four units 4 at iteration 50 (committed together) and the crash comes
    # after the second of their next four, at iteration 100
    crash_at_checkpoint_write(monkeypatch, 10)
    with pytest.raises(Crash):
        run(cfg, tmp_path / "b", digits)
    path = next((tmp_path / "b").iterdir())
    assert (path / "trial_0/level_1/finetune/result.json").exists()
    left = sorted(p.parent.name for p in path.glob("trial_0/level_1/*/checkpoint.pt"))
    assert left == ["lr_rewind", "oneshot", "random_mask", "ticket"]
    assert {torch_load(path / f"trial_0/level_1/{b}/checkpoint.pt")["step"] for b in left} == {50}
    lines: list[str] = []
    with RunStore.open(cfg, run_dir=path) as store:
        resumed = Lottery(cfg, store, digits, log=lines.append).run()
    assert any("resuming from checkpoint" in line for line in lines)
    assert without_seconds(resumed) == without_seconds(ref)
    for unit in ("level_1/finetune", "level_2/oneshot", "level_2/lr_rewind"):
        a, b = torch_load(ref_path / f"trial_0/{unit}/final.pt"), torch_load(path / f"trial_0/{unit}/final.pt")
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(path.glob("trial_*/level_*/*/checkpoint.pt"))


# ------------------------------------------------------------------------------- rewinding the optimizer


@pytest.fixture(scope="module")
def rewound(tmp_path_factory, digits):
    cfg = make_cfg(lottery__levels=1, lottery__rewind_optimizer=True,
                   lottery__branches=("ticket", "reinit", "random_mask", "oneshot", "finetune"))
    path, records = run(cfg, tmp_path_factory.mktemp("rewound"), digits)
    return cfg, path, records


def test_rewind_files_are_the_dense_runs_weights_and_optimizer_at_k_exactly(rewound, digits):
    """Continuing the dense network from rewind.pt and rewind_optimizer.pt at k reproduces its
    trained weights bit for bit, which only the exact state at k does."""
    cfg, path, _ = rewound
    theta_k = torch_load(path / "trial_0/rewind.pt")
    opt_k = torch_load(path / "trial_0/rewind_optimizer.pt")
    sums = json.loads((path / "checksums.json").read_text())
    assert "trial_0/rewind_optimizer.pt" in sums and "trial_0/rewind.pt" in sums
    dense = torch_load(path / "trial_0/level_0/ticket/final.pt")
    full = full_mask({n: theta_k[n] for n in torch_load(path / "trial_0/level_1/mask.pt")})
    cont = retrain(cfg, digits, theta_k, full, optimizer=opt_k)
    assert all(torch.equal(cont.final_state[k], dense[k]) for k in dense)
    fresh = retrain(cfg, digits, theta_k, full)
    assert any(not torch.equal(fresh.final_state[k], dense[k]) for k in dense)


def test_rewound_units_start_from_the_masked_optimizer_state_at_k_and_the_others_fresh(rewound, digits):
    cfg, path, records = rewound
    theta_k = torch_load(path / "trial_0/rewind.pt")
    opt_k = torch_load(path / "trial_0/rewind_optimizer.pt")
    level_mask = torch_load(path / "trial_0/level_1/mask.pt")
    starts = {r.branch: r.optimizer_start for r in records if r.level == 1}
    assert starts == {"ticket": "rewound", "reinit": "fresh", "random_mask": "rewound", "oneshot": "rewound",
                      "finetune": "fresh"}
    for branch, how in starts.items():
        inputs = result(path, 1, branch)["inputs"]
        assert ("trial_0/rewind_optimizer.pt" in inputs) == (how == "rewound")
    for branch in ("ticket", "random_mask"):
        mask = level_mask if branch == "ticket" else torch_load(path / "trial_0/level_1/random_mask/mask.pt")
        final = torch_load(path / f"trial_0/level_1/{branch}/final.pt")
        assert all(torch.count_nonzero(final[n][~m]) == 0 for n, m in mask.items())  # moments masked too
        ref = retrain(cfg, digits, theta_k, mask, optimizer=opt_k)
        assert all(torch.equal(final[k], ref.final_state[k]) for k in final), branch
        fresh = retrain(cfg, digits, theta_k, mask)
        assert any(not torch.equal(final[k], fresh.final_state[k]) for k in final), branch


def test_damage_to_the_rewound_optimizer_state_is_detected(rewound, digits, tmp_path):
    import shutil

    cfg, path, _ = rewound
    copy = tmp_path / path.name
    shutil.copytree(path, copy)
    f = copy / "trial_0/rewind_optimizer.pt"
    data = bytearray(f.read_bytes())
    data[-50] ^= 0xFF
    f.write_bytes(bytes(data))
    store = RunStore(copy)
    assert any("rewind_optimizer.pt" in p for p in store.unit_problems(0, 1, "ticket"))
    assert store.unit_problems(0, 1, "reinit") == []  # it never read it
    audit = audit_run(copy)
    assert "trial_0/rewind_optimizer.pt" in audit.inputs_damaged
    assert any(r.startswith("recompute trial_0/rewind_optimizer.pt (retrain the dense network of trial 0, "
                            "which writes its optimizer state at k again)") for r in audit.redo), audit.redo
