"""The branch registry (lth.experiment.branches): every registered branch starts its unit with the
level's per-layer counts at the rewind iteration, repeatably; unknown names list the valid ones."""

from __future__ import annotations

import pytest
import torch

from lth.config import ConfigError, ExperimentConfig, get_preset
from lth.experiment import BRANCHES, Experiment, UnitKey, get_branch, next_mask, register_branch
from lth.experiment.branches import UnitStart, branch_names, check_branches
from lth.models import build_model, initialize, prunable_tensors
from lth.pruning import full_mask
from lth.store import RunStore

SHAPE = (1, 8, 8)


def make_cfg(rewind: int = 0) -> ExperimentConfig:
    d = get_preset("digits-quick").to_dict()
    d["train"].update(iterations=120, eval_every=40)
    d["lottery"].update(levels=2, trials=2, branches=tuple(BRANCHES), rewind_iteration=rewind)
    return ExperimentConfig.from_dict(d)


def model(seed: int):
    m = build_model("mlp-100-50", SHAPE, 10)
    initialize(m, torch.Generator().manual_seed(seed))
    return m


@pytest.fixture
def level(tmp_path):
    """An Experiment (over an empty store) and a level-2 mask pruned from some weights."""

    def make(rewind: int = 0):
        cfg = make_cfg(rewind)
        store = RunStore.open(cfg, root=tmp_path, lock=False)
        exp = Experiment(cfg, store, SHAPE, 10)
        template = model(0)
        mask = next_mask(template, cfg, dict(template.named_parameters()),
                         full_mask(prunable_tensors(template)), 2)
        start = {k: v.detach().clone() for k, v in model(1).state_dict().items()}
        # stands in for the trained tickets of the trial (finetune, lr_rewind and oneshot read them)
        trained = {lv: {k: v.detach().clone() for k, v in model(10 + lv).state_dict().items()} for lv in (0, 1)}
        exp.store.load_final = lambda trial, lv, branch: trained[lv]
        return exp, mask, start

    return make


def counts(mask) -> dict[str, int]:
    return {n: int(t.sum()) for n, t in mask.items()}


def test_the_papers_branches_are_registered_ticket_first():
    assert branch_names()[:3] == ["ticket", "reinit", "random_mask"]
    assert all(get_branch(n).name == n and get_branch(n).description for n in BRANCHES)


@pytest.mark.parametrize("rewind", [0, 40])
@pytest.mark.parametrize("branch", list(BRANCHES))
def test_every_branch_starts_with_the_levels_counts_at_the_rewind_iteration_repeatably(level, branch, rewind):
    exp, mask, start = level(rewind)
    spec = exp.unit_spec(UnitKey(1, 2, branch), mask, start)
    assert spec.key == UnitKey(1, 2, branch)
    assert spec.start_step == rewind
    assert counts(spec.mask) == counts(mask)
    assert set(spec.start_state) == set(start)
    assert all(spec.start_state[k].shape == start[k].shape for k in start)
    again = exp.unit_spec(UnitKey(1, 2, branch), mask, start)
    assert all(torch.equal(again.mask[n], spec.mask[n]) for n in mask)
    assert all(torch.equal(again.start_state[k], spec.start_state[k]) for k in start)
    # the stored flag says whether the unit's mask is its own
    assert get_branch(branch).own_mask == any(not torch.equal(spec.mask[n], mask[n]) for n in mask)


# What the paper's branches test (Sec. 2): the same mask or not, the same start values or not.
KNOWN = {"ticket": (True, True), "reinit": (True, False), "random_mask": (False, True)}


@pytest.mark.parametrize("branch", list(KNOWN))
def test_the_papers_branches_differ_only_in_what_they_test(level, branch):
    exp, mask, start = level()
    spec = exp.unit_spec(UnitKey(0, 1, branch), mask, start)
    same_mask, same_start = KNOWN[branch]
    assert all(torch.equal(spec.mask[n], mask[n]) for n in mask) == same_mask
    assert all(torch.equal(spec.start_state[k], start[k]) for k in start) == same_start
    # seeded by (trial, level): another trial or level draws differently where the branch draws
    other = exp.unit_spec(UnitKey(1, 1, branch), mask, start)
    if not same_mask:
        assert any(not torch.equal(other.mask[n], spec.mask[n]) for n in mask)
    if not same_start:
        assert any(not torch.equal(other.start_state[k], spec.start_state[k]) for k in mask)


def test_level_0_trains_only_the_dense_ticket(level):
    exp, _, _ = level()
    with pytest.raises(ValueError, match="level 0 trains only the dense network"):
        exp.unit_spec(UnitKey(0, 0, "reinit"))


def test_an_unknown_branch_name_lists_the_valid_ones():
    valid = ", ".join(BRANCHES)
    with pytest.raises(ConfigError, match=f"unknown branch 'lucky'; choose from {valid}"):
        get_branch("lucky")
    with pytest.raises(ConfigError, match=f"unknown branch lucky; choose from {valid}"):
        check_branches(("ticket", "lucky"))
    check_branches(tuple(BRANCHES))


def test_a_registered_branch_is_usable_and_a_name_registers_once():
    @register_branch("test-only-dense-start", "a branch the test adds")
    def dense_start(ctx):
        return UnitStart(ctx.mask, ctx.start_state, 0)

    try:
        check_branches(("ticket", "test-only-dense-start"))
        assert get_branch("test-only-dense-start").start is dense_start
        with pytest.raises(RuntimeError, match="registered twice"):
            register_branch("test-only-dense-start", "again")(dense_start)
    finally:
        BRANCHES.pop("test-only-dense-start")


def test_the_reinit_draw_is_seeded_by_trial_and_level_from_the_initialisation_distribution(tmp_path):
    def draw(seed, trial, level):
        d = make_cfg().to_dict()
        d["lottery"]["seed"] = seed
        cfg = ExperimentConfig.from_dict(d)
        return Experiment(cfg, RunStore(tmp_path / f"s{seed}"), SHAPE, 10).draw_init("reinit", trial, level)

    a = draw(0, 0, 1)
    b = draw(0, 0, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)  # repeatable: nothing but the seed path plays a part
    theta0 = model(0).state_dict()
    for other in (draw(1, 0, 1), draw(0, 1, 1), draw(0, 0, 2)):
        assert not torch.equal(other["hidden.0.weight"], a["hidden.0.weight"])
    for n in ("hidden.0.weight", "hidden.1.weight", "out.weight"):
        assert a[n].std().item() == pytest.approx(theta0[n].std().item(), rel=0.1)


@pytest.mark.parametrize("rewind", [0, 40])
@pytest.mark.parametrize("one_shot", [False, True])
@pytest.mark.parametrize("branch, lr", [("finetune", "final"), ("lr_rewind", "schedule")])
def test_finetune_and_lr_rewind_start_from_the_trained_ticket_the_mask_was_pruned_from(
        tmp_path, branch, lr, rewind, one_shot):
    d = make_cfg(rewind).to_dict()
    d["lottery"]["one_shot"] = one_shot
    cfg = ExperimentConfig.from_dict(d)
    exp = Experiment(cfg, RunStore.open(cfg, root=tmp_path, lock=False), SHAPE, 10)
    trained = {lv: {k: v.detach().clone() for k, v in model(10 + lv).state_dict().items()} for lv in (0, 1)}
    exp.store.load_final = lambda trial, lv, b: trained[lv] if b == "ticket" else None
    template = model(0)
    mask = next_mask(template, cfg, dict(template.named_parameters()), full_mask(prunable_tensors(template)), 2)
    spec = exp.unit_spec(UnitKey(0, 2, branch), mask, model(1).state_dict())
    source = 0 if one_shot else 1  # level 2's mask is pruned from level 1's ticket, or one-shot from level 0's
    assert all(torch.equal(spec.start_state[k], trained[source][k]) for k in trained[source])
    assert (spec.start_step, spec.lr, spec.start_optimizer, spec.trained_from) == (rewind, lr, None, (source,))
    assert spec.mask is mask


def test_oneshot_keeps_the_largest_dense_trained_weights_at_the_levels_counts_and_the_start_values(level):
    exp, mask, start = level(40)
    spec = exp.unit_spec(UnitKey(0, 2, "oneshot"), mask, start)
    dense = exp.store.load_final(0, 0, "ticket")
    assert counts(spec.mask) == counts(mask)
    for n, m in spec.mask.items():  # no pruned weight is larger than a kept one
        assert dense[n][~m].abs().max() <= dense[n][m].abs().min()
    assert all(torch.equal(spec.start_state[k], start[k]) for k in start)
    assert (spec.start_step, spec.lr, spec.trained_from) == (40, "schedule", (0,))
    assert get_branch("oneshot").own_mask


@pytest.mark.parametrize("branch, rewound", [("ticket", True), ("random_mask", True), ("oneshot", True),
                                             ("reinit", False), ("finetune", False), ("lr_rewind", False)])
def test_the_rewound_optimizer_state_goes_to_the_units_that_start_from_theta_k(level, branch, rewound):
    exp, mask, start = level(40)
    opt = {"state": {0: {"step": torch.tensor(40.0)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]}
    spec = exp.unit_spec(UnitKey(0, 2, branch), mask, start, opt)
    assert (spec.start_optimizer is opt) == rewound
    assert spec.start_optimizer is None or rewound
