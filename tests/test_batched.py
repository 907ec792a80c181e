"""Vectorised training of several units equals training them one at a time (same seeds)."""

from __future__ import annotations

import copy

import pytest
import torch

from lth.batched import UnitInput, supports_batching, train_many
from lth.config import TrainConfig
from lth.data import load_splits
from lth.models import build_model, initialize, prunable_parameters
from lth.pruning import random_mask_like
from lth.stacked import MLPEngine, VmapEngine, make_engine
from lth.train import TrainingDiverged, TrainState, apply_mask_, train


def unit(seed: int, keep: float):
    m = build_model("mlp-100-50", (1, 8, 8), 10)
    initialize(m, torch.Generator().manual_seed(seed))
    params = dict(m.named_parameters())
    g = torch.Generator().manual_seed(seed + 1000)
    mask = {n: torch.rand(params[n].shape, generator=g) < keep for n in prunable_parameters(m)}
    apply_mask_(m, mask)
    return m, mask


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_batched_equals_one_at_a_time(digits, optimizer):
    cfg = TrainConfig(iterations=300, batch_size=32, optimizer=optimizer,
                      lr=1e-3 if optimizer == "adam" else 0.05, weight_decay=1e-4, eval_every=50)
    specs = [(0, 1.0), (1, 0.5), (2, 0.2), (3, 0.05)]
    inputs, singles = [], []
    for i, (seed, keep) in enumerate(specs):
        m, mask = unit(seed, keep)
        inputs.append(UnitInput({k: v.detach().clone() for k, v in m.state_dict().items()}, mask, 10 + i))
        singles.append(train(m, mask, digits, cfg, data_seed=10 + i))
    many = train_many(build_model("mlp-100-50", (1, 8, 8), 10), inputs, digits, cfg)
    for (seed, keep), a, b, u in zip(specs, singles, many, inputs):
        assert [h.iteration for h in a.history] == [h.iteration for h in b.history]
        for ha, hb in zip(a.history, b.history):
            assert hb.val_loss == pytest.approx(ha.val_loss, rel=1e-4, abs=1e-5)
            assert hb.test_accuracy == pytest.approx(ha.test_accuracy, abs=1 / 360 + 1e-9)
        for k in a.final_state:
            torch.testing.assert_close(b.final_state[k], a.final_state[k], rtol=1e-4, atol=1e-5)
        for k, m in u.mask.items():  # pruned weights exactly zero in the batched path too
            assert torch.count_nonzero(b.final_state[k][~m]) == 0


def test_units_are_independent_one_diverging_does_not_touch_the_others(digits):
    cfg = TrainConfig(iterations=100, batch_size=32, eval_every=50)
    m0, k0 = unit(0, 0.5)
    m1, k1 = unit(1, 0.5)
    s1 = {k: v.detach().clone() for k, v in m1.state_dict().items()}
    bad = {k: v.detach().clone() for k, v in m0.state_dict().items()}
    bad["hidden.0.weight"][0, 0] = float("nan")
    out = train_many(build_model("mlp-100-50", (1, 8, 8), 10),
                     [UnitInput(bad, k0, 0), UnitInput(s1, k1, 1)], digits, cfg)
    assert isinstance(out[0], TrainingDiverged)
    alone = train(m1, k1, digits, cfg, data_seed=1)
    assert out[1].history[-1].val_loss == pytest.approx(alone.history[-1].val_loss, rel=1e-4)


def test_models_with_batchnorm_or_dropout_are_not_batched():
    assert supports_batching(build_model("lenet300", (1, 28, 28), 10))
    assert supports_batching(build_model("conv2", (3, 32, 32), 10))
    assert not supports_batching(build_model("resnet20", (3, 32, 32), 10))
    assert not supports_batching(build_model("conv2-dropout", (3, 32, 32), 10))


def states_of(made) -> list[dict[str, torch.Tensor]]:
    """Copies of the state dicts of ``(model, mask)`` pairs, the engines' starting weights."""
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m, _ in made]


def equal_count_unit(seed: int, keep: float, name: str = "mlp-100-50", shape=(1, 8, 8)):
    """A unit whose mask keeps exactly round(keep * size) weights per layer (as IMP levels do)."""
    m = build_model(name, shape, 10)
    initialize(m, torch.Generator().manual_seed(seed))
    params = dict(m.named_parameters())
    dense = {n: torch.ones_like(params[n], dtype=torch.bool) for n in prunable_parameters(m)}
    base = {n: torch.zeros(v.numel(), dtype=torch.bool) for n, v in dense.items()}
    for n in base:
        base[n][: max(1, round(keep * base[n].numel()))] = True
        base[n] = base[n].view(dense[n].shape)
    mask = random_mask_like(base, torch.Generator().manual_seed(seed + 7))
    apply_mask_(m, mask)
    return m, mask


def assert_same_training(a, b, rtol=1e-4, atol=1e-5):
    assert [h.iteration for h in a.history] == [h.iteration for h in b.history]
    for ha, hb in zip(a.history, b.history):
        assert hb.val_loss == pytest.approx(ha.val_loss, rel=rtol, abs=atol)
    for k in a.final_state:
        torch.testing.assert_close(b.final_state[k], a.final_state[k], rtol=rtol, atol=atol)


@pytest.mark.parametrize("n_units", [3, 1])  # one unit gathers/scatters through a flat index
def test_compact_optimisation_of_sparse_layers_equals_one_at_a_time(digits, n_units):
    """Units with equal per-layer counts below the compact threshold step only surviving weights."""
    cfg = TrainConfig(iterations=200, batch_size=32, lr=2e-3, eval_every=50)
    made = [equal_count_unit(s, 0.1) for s in range(n_units)]
    states = states_of(made)
    engine = make_engine(build_model("mlp-100-50", (1, 8, 8), 10), states, [k for _, k in made], "cpu")
    assert isinstance(engine, MLPEngine)
    assert set(engine.compact) == set(prunable_parameters(made[0][0]))  # really on the compact path
    inputs = [UnitInput(st, k, 5 + i) for i, (st, (_, k)) in enumerate(zip(states, made))]
    many = train_many(build_model("mlp-100-50", (1, 8, 8), 10), inputs, digits, cfg)
    for i, (m, k) in enumerate(made):
        single = train(m, k, digits, cfg, data_seed=5 + i)
        assert_same_training(single, many[i])
        for name, keep in k.items():
            assert torch.count_nonzero(many[i].final_state[name][~keep]) == 0


def test_vmap_engine_for_convolutional_models_equals_one_at_a_time(digits):
    cfg = TrainConfig(iterations=60, batch_size=16, lr=1e-3, eval_every=30)
    made = [equal_count_unit(s, 0.5, "conv2", (1, 8, 8)) for s in range(2)]
    states = states_of(made)
    assert isinstance(make_engine(build_model("conv2", (1, 8, 8), 10), states, [k for _, k in made], "cpu"),
                      VmapEngine)
    inputs = [UnitInput(st, k, i) for i, (st, (_, k)) in enumerate(zip(states, made))]
    many = train_many(build_model("conv2", (1, 8, 8), 10), inputs, digits, cfg)
    for i, (m, k) in enumerate(made):
        assert_same_training(train(m, k, digits, cfg, data_seed=i), many[i], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_batched_checkpoints_resume_batched_and_one_at_a_time(digits, keep):
    """A checkpoint written by train_many continues in train_many or in train() with the same result."""
    cfg = TrainConfig(iterations=150, batch_size=32, lr=2e-3, eval_every=25)
    made = [equal_count_unit(s, keep) for s in range(2)]
    states = states_of(made)
    inputs = [UnitInput(st, k, i) for i, (st, (_, k)) in enumerate(zip(states, made))]
    template = build_model("mlp-100-50", (1, 8, 8), 10)
    reference = train_many(template, inputs, digits, cfg)
    saved: dict[int, list[TrainState]] = {0: [], 1: []}
    train_many(template, inputs, digits, cfg, checkpoint_every=60,
               on_checkpoint=lambda states: [saved[i].append(st) for i, st in states.items()])
    assert [s.step for s in saved[0]] == [60, 120]
    resumed = train_many(template, [UnitInput(st, k, i, resume=saved[i][0])
                                    for i, (st, (_, k)) in enumerate(zip(states, made))], digits, cfg)
    for a, b in zip(reference, resumed):
        assert_same_training(a, b, rtol=1e-6, atol=1e-7)
    for i, (m, k) in enumerate(made):  # the same checkpoint resumes one-at-a-time
        single = train(build_model("mlp-100-50", (1, 8, 8), 10), k, digits, cfg, data_seed=i,
                       resume=saved[i][1])
        assert_same_training(reference[i], single)
    # and a one-at-a-time checkpoint resumes batched
    singles: dict[int, TrainState] = {}
    for i, (m, k) in enumerate(made):
        fresh, _ = equal_count_unit(i, keep)
        train(fresh, k, digits, cfg, data_seed=i, checkpoint_every=90,
              on_checkpoint=lambda st, i=i: singles.setdefault(i, copy.deepcopy(st)))
    back = train_many(template, [UnitInput(st, k, i, resume=singles[i])
                                 for i, (st, (_, k)) in enumerate(zip(states, made))], digits, cfg)
    for a, b in zip(reference, back):
        assert_same_training(a, b)


def test_units_resuming_from_different_iterations_are_refused(digits):
    cfg = TrainConfig(iterations=40, batch_size=32, eval_every=20)
    m, k = equal_count_unit(0, 0.5)
    st = {kk: v.detach().clone() for kk, v in m.state_dict().items()}
    got: list[TrainState] = []
    train_many(build_model("mlp-100-50", (1, 8, 8), 10), [UnitInput(st, k, 0)], digits, cfg,
               checkpoint_every=20, on_checkpoint=lambda states: got.append(states[0]))
    with pytest.raises(ValueError, match="different iterations"):
        train_many(build_model("mlp-100-50", (1, 8, 8), 10),
                   [UnitInput(st, k, 0, resume=got[0]), UnitInput(st, k, 1)], digits, cfg)


def test_capture_hands_each_unit_its_weights_at_the_rewind_iteration(digits):
    cfg = TrainConfig(iterations=30, batch_size=32, eval_every=10)
    made = [equal_count_unit(s, 0.5) for s in range(2)]
    states = states_of(made)
    got: dict[int, dict] = {}
    train_many(build_model("mlp-100-50", (1, 8, 8), 10),
               [UnitInput(st, k, i) for i, (st, (_, k)) in enumerate(zip(states, made))], digits, cfg,
               capture_steps=frozenset({7}), on_capture=lambda i, step, s: got.setdefault(i, s))
    short = TrainConfig(iterations=7, batch_size=32, eval_every=10)
    for i, (m, k) in enumerate(made):
        ref = train(m, k, digits, short, data_seed=i).final_state
        for name in ref:
            torch.testing.assert_close(got[i][name], ref[name], rtol=1e-5, atol=1e-6)


def test_bf16_products_train_close_to_fp32(digits):
    """bf16 changes rounding, not the result: final accuracy within a few points of fp32."""
    made = [equal_count_unit(s, 0.5) for s in range(2)]
    states = states_of(made)
    inputs = [UnitInput(st, k, i) for i, (st, (_, k)) in enumerate(zip(states, made))]
    out = {}
    for prec in ("fp32", "bf16"):
        cfg = TrainConfig(iterations=400, batch_size=32, lr=2e-3, eval_every=100, precision=prec)
        out[prec] = train_many(build_model("mlp-100-50", (1, 8, 8), 10), inputs, digits, cfg)
    for a, b in zip(out["fp32"], out["bf16"]):
        assert a.history[-1].test_accuracy > 0.8
        assert abs(a.history[-1].test_accuracy - b.history[-1].test_accuracy) < 0.04
        assert a.final_state["out.weight"].dtype == b.final_state["out.weight"].dtype == torch.float32


def test_unpruned_layers_take_the_gradient_unmasked_and_equal_one_at_a_time(digits):
    """At IMP level 0 every mask is full: no gradient masking, same training as train()."""
    made = [unit(s, 1.0) for s in range(2)]
    states = states_of(made)
    engine = make_engine(build_model("mlp-100-50", (1, 8, 8), 10), states, [k for _, k in made], "cpu")
    assert isinstance(engine, MLPEngine)
    assert engine._unmasked == set(prunable_parameters(made[0][0]))
    cfg = TrainConfig(iterations=120, batch_size=32, lr=2e-3, eval_every=40)
    inputs = [UnitInput(st, k, 3 + i) for i, (st, (_, k)) in enumerate(zip(states, made))]
    many = train_many(build_model("mlp-100-50", (1, 8, 8), 10), inputs, digits, cfg)
    for i, (m, k) in enumerate(made):
        assert_same_training(train(m, k, digits, cfg, data_seed=3 + i), many[i])


def test_bf16_compact_path_equals_bf16_masked_dense_path(digits, monkeypatch):
    """In bf16 the compact path keeps bf16 copies by scattering int16 bits and syncs the float32
    weights lazily; it must train exactly like the masked dense path, including the weights a
    rewind capture and the final state read mid-way."""
    import lth.stacked as stacked

    made = [equal_count_unit(s, 0.1) for s in range(3)]
    states = states_of(made)
    masks = [k for _, k in made]
    cfg = TrainConfig(iterations=150, batch_size=32, lr=2e-3, eval_every=50, precision="bf16")
    runs = {}
    for threshold in (0.25, 0.0):  # 0.0 turns the compact path off
        monkeypatch.setattr(stacked, "COMPACT_BELOW", threshold)
        eng = make_engine(build_model("mlp-100-50", (1, 8, 8), 10), states, masks, "cpu", "bf16")
        assert bool(eng.compact) == (threshold > 0)
        captured = {}
        inputs = [UnitInput(st, k, 11 + i) for i, (st, k) in enumerate(zip(states, masks))]
        res = train_many(build_model("mlp-100-50", (1, 8, 8), 10), inputs, digits, cfg,
                         capture_steps=frozenset({70}), on_capture=lambda i, s, st: captured.__setitem__(i, st))
        runs[threshold] = (res, captured)
    (compact, cap_c), (dense, cap_d) = runs[0.25], runs[0.0]
    for i in range(3):
        assert_same_training(dense[i], compact[i], rtol=1e-6, atol=1e-7)
        for name in cap_d[i]:
            torch.testing.assert_close(cap_c[i][name], cap_d[i][name], rtol=1e-6, atol=1e-7)
        for name, keep in masks[i].items():
            assert torch.count_nonzero(compact[i].final_state[name][~keep]) == 0
            assert torch.count_nonzero(cap_c[i][name][keep]) > 0  # the capture is not stale zeros


def sparse_engine(made, monkeypatch, grad_below=0.2):
    import lth.stacked as stacked

    for name in ("SPARSE_FORWARD_BELOW", "SPARSE_EVAL_BELOW"):
        monkeypatch.setattr(stacked, name, 0.2)
    for name in ("SPARSE_GRAD_BELOW", "SPARSE_GRAD_BELOW_ONE_UNIT"):
        monkeypatch.setattr(stacked, name, grad_below)
    monkeypatch.setattr(stacked, "SPARSE_MIN_WEIGHTS", 1000)
    states = states_of(made)
    return make_engine(build_model("mlp-100-50", (1, 8, 8), 10), states, [k for _, k in made], "cpu")


@pytest.mark.parametrize("gradient", ["sddmm", "dense product gathered"])
def test_sparse_layers_are_one_csr_product_for_all_units_equal_to_the_dense_product(digits, monkeypatch, gradient):
    """The block-diagonal CSR forward, the weight gradient (the batched SDDMM, or the dense batched
    product gathered at the surviving weights: the faster one for groups between 10% and 25%) and
    the stacked CSR evaluation each cover every unit in one call, and equal the dense masked
    products unit by unit."""
    made = [equal_count_unit(s, 0.1) for s in range(3)]
    eng = sparse_engine(made, monkeypatch, grad_below=0.2 if gradient == "sddmm" else 0.05)
    name = "hidden.0.weight"
    assert eng._block[name].shape == (3 * 100, 3 * 64) and eng._stacked[name].shape == (3 * 100, 64)
    if gradient == "sddmm":
        assert eng._sddmm[name].shape == (3, 100, 64) and name not in eng._wgrad
    else:
        assert name in eng._sparse_fwd and not eng._sddmm and eng._wgrad[name].shape == (3, 100, 64)
    g = torch.Generator().manual_seed(3)
    x = digits.train_x[torch.randint(0, digits.train_x.shape[0], (3, 32), generator=g)]
    y = digits.train_y[torch.randint(0, digits.train_y.shape[0], (3, 32), generator=g)]
    loss = eng.loss_and_grad(x, y)
    for i, (m, k) in enumerate(made):
        m.zero_grad()
        ref = torch.nn.functional.cross_entropy(m(x[i]), y[i])
        ref.backward()
        assert loss[i].item() == pytest.approx(ref.item(), rel=1e-5)
        for pname, p in m.named_parameters():
            got = eng._values[pname].grad[i]
            want = p.grad.flatten()[eng.compact[pname][i]] if pname in eng.compact else p.grad
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        want = torch.stack([m(digits.test_x[:300]) for m, _ in made])
    torch.testing.assert_close(eng.logits(digits.test_x[:300]), want, rtol=1e-4, atol=1e-5)


def test_groups_take_the_dense_gradient_between_10_and_25_percent_and_one_unit_the_sddmm(monkeypatch):
    """The measured rule (lth.stacked, session 9): at 15% a group's first-layer weight gradient is one
    dense batched product gathered at the surviving weights, one unit's the SDDMM; below 10% both
    take the SDDMM. The CSR forward is used in every case."""
    import lth.stacked as stacked

    monkeypatch.setattr(stacked, "SPARSE_MIN_WEIGHTS", 1000)
    name = "hidden.0.weight"
    for keep, n, sddmm in ((0.15, 3, False), (0.15, 1, True), (0.08, 3, True), (0.08, 1, True)):
        made = [equal_count_unit(s, keep) for s in range(n)]
        eng = make_engine(build_model("mlp-100-50", (1, 8, 8), 10),
                          states_of(made),
                          [k for _, k in made], "cpu")
        assert name in eng._sparse_fwd, (keep, n)
        assert (name in eng._sddmm) == sddmm and (name in eng._wgrad) != sddmm, (keep, n)


def test_sparse_evaluation_of_a_unit_does_not_depend_on_its_group(digits, monkeypatch):
    """Exactly (bitwise): a unit evaluated alone, in a subset, or with its whole group."""
    made = [equal_count_unit(s, 0.1) for s in range(3)]
    group = sparse_engine(made, monkeypatch)
    assert group.sparse_eval
    x = digits.test_x[:300]
    full = group.logits(x)
    for pick in ([1], [2, 0]):
        torch.testing.assert_close(group.logits(x, units=pick), full[pick], rtol=0, atol=0)
    for i in range(3):
        alone = sparse_engine(made[i:i + 1], monkeypatch)
        torch.testing.assert_close(alone.logits(x), full[i:i + 1], rtol=0, atol=0)


@pytest.mark.parametrize("threads", [1, 2])
def test_dense_evaluation_of_a_lenet_does_not_depend_on_its_group(shared_data, threads):
    """Exactly (bitwise), at LeNet-300-100's real sizes on real MNIST: the first layer of every unit
    is one wide GEMM, and a unit's outputs are the same alone, in a subset, or in a group of 15,
    and equal to its own model's (one unit's GEMM is the model's own product)."""
    sp = load_splits("mnist", shared_data, val_size=1000, split_seed=0, download=False)
    x = sp.val_x
    made = [equal_count_unit(s, 0.5, "lenet300", (1, 28, 28)) for s in range(15)]

    def engine(models):
        return make_engine(build_model("lenet300", (1, 28, 28), 10), states_of(models), [k for _, k in models], "cpu")

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        group = engine(made)
        assert not group.sparse_eval
        full = group.logits(x)
        for pick in ([4], [14, 0, 7], list(range(9))):
            torch.testing.assert_close(group.logits(x, units=pick), full[pick], rtol=0, atol=0)
        for i in (0, 13):
            torch.testing.assert_close(engine(made[i:i + 1]).logits(x), full[i:i + 1], rtol=0, atol=0)
        with torch.no_grad():
            want = torch.stack([m(x) for m, _ in made])
        torch.testing.assert_close(full, want, rtol=1e-5, atol=1e-5)
    finally:
        torch.set_num_threads(before)


def test_sparse_evaluation_goes_in_cache_sized_chunks_with_the_same_results(digits, monkeypatch):
    import lth.stacked as stacked
    from lth.batched import _eval_chunks, _evaluate_many

    made = [equal_count_unit(s, 0.1) for s in range(3)]
    dense_eng = make_engine(build_model("mlp-100-50", (1, 8, 8), 10),
                            states_of(made),
                            [k for _, k in made], "cpu")
    assert dense_eng.eval_chunk_limit == stacked.DENSE_EVAL_CHUNK
    eng = sparse_engine(made, monkeypatch)
    monkeypatch.setattr(stacked, "SPARSE_EVAL_CHUNK", 128)
    assert eng.eval_chunk_limit == 128
    x, y = digits.test_x, digits.test_y
    chunks = _eval_chunks(eng, x, y, 10_000)
    assert [c[0].shape[0] for c in chunks[:-1]] == [128] * (len(chunks) - 1) and len(chunks) > 2
    loss, acc = _evaluate_many(eng, chunks)
    ref_loss, ref_acc = _evaluate_many(dense_eng, _eval_chunks(dense_eng, x, y, 10_000))
    assert acc == ref_acc
    assert loss == pytest.approx(ref_loss, rel=1e-5)


def test_sparse_kernel_path_equals_one_at_a_time(digits, monkeypatch):
    """CSR forward, SDDMM gradient and CSR evaluation of a very sparse first layer (float32) train
    like the dense path, with the dense weights synced lazily for captures and the final state."""
    import lth.stacked as stacked

    for name in ("SPARSE_FORWARD_BELOW", "SPARSE_GRAD_BELOW", "SPARSE_EVAL_BELOW"):
        monkeypatch.setattr(stacked, name, 0.2)
    monkeypatch.setattr(stacked, "SPARSE_MIN_WEIGHTS", 1000)  # the 64x100 and 100x50 layers qualify
    made = [equal_count_unit(s, 0.1) for s in range(3)]
    states = states_of(made)
    masks = [k for _, k in made]
    eng = make_engine(build_model("mlp-100-50", (1, 8, 8), 10), states, masks, "cpu")
    both = {"hidden.0.weight", "hidden.1.weight"}
    assert eng._sparse_fwd == both and set(eng._sddmm) == both and eng.sparse_eval == both
    assert eng.wants_transposed_eval_input
    # the first layer's dense weights are synced lazily; the second's feed the input gradient
    assert eng._lazy == {"hidden.0.weight"}
    cfg = TrainConfig(iterations=150, batch_size=32, lr=2e-3, eval_every=50)
    captured = {}
    inputs = [UnitInput(st, k, 21 + i) for i, (st, k) in enumerate(zip(states, masks))]
    many = train_many(build_model("mlp-100-50", (1, 8, 8), 10), inputs, digits, cfg,
                      capture_steps=frozenset({60}), on_capture=lambda i, s, st: captured.__setitem__(i, st))
    for i, (m, k) in enumerate(made):
        ref_capture = {}

        def grab(step, st, store=ref_capture):
            store.update(st)

        single = train(m, k, digits, cfg, data_seed=21 + i, capture_steps=frozenset({60}), on_capture=grab)
        assert_same_training(single, many[i])
        for name in ref_capture:
            torch.testing.assert_close(captured[i][name], ref_capture[name], rtol=1e-4, atol=1e-5)
        for name, keep in k.items():
            assert torch.count_nonzero(many[i].final_state[name][~keep]) == 0
