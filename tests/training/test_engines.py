"""Engines (lth.training.engines): each trains like the module engine (plain autograd on the model,
the reference) one unit at a time; the MLP engine's compact and sparse kernels, switched on through
an EnginePolicy, equal its dense path; a unit's evaluation does not depend on its group; the engine
is chosen by what the model is."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

from lth.config import TrainConfig
from lth.data import load_splits
from lth.models import build_model, prunable_parameters
from lth.training import UnitInput, train, train_many
from lth.training.engines import (
    ENGINES,
    EnginePolicy,
    MLPEngine,
    ModuleEngine,
    VmapEngine,
    choose_engine,
    linear_relu_chain,
    make_engine,
    max_units,
    supports_batching,
)
from lth.training.evaluation import eval_chunks, evaluate_many

from .units import (
    assert_pruned_weights_zero,
    assert_same_training,
    bernoulli_unit,
    equal_count_unit,
    mlp,
    state_of,
    states_of,
)


def sparse_policy(grad_below: float = 0.2) -> EnginePolicy:
    """Sparse kernels for layers below 20% density from 1,000 weights on, so that mlp-100-50's
    64x100 and 100x50 layers qualify."""
    return EnginePolicy(sparse_forward_below=0.2, sparse_eval_below=0.2, sparse_grad_below=grad_below,
                        sparse_grad_below_one_unit=grad_below, sparse_min_weights=1000)


def sparse_engine(made, policy: EnginePolicy | None = None):
    return make_engine(mlp(), states_of(made), [k for _, k in made], "cpu", policy=policy or sparse_policy())


# ------------------------------------------------------------------------- engines vs the reference


@pytest.mark.parametrize("engine", ["mlp", "vmap"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_n_units_on_an_engine_equal_the_module_engine_one_at_a_time(digits, optimizer, engine):
    cfg = TrainConfig(iterations=300, batch_size=32, optimizer=optimizer,
                      lr=1e-3 if optimizer == "adam" else 0.05, weight_decay=1e-4, eval_every=50)
    specs = [(0, 1.0), (1, 0.5), (2, 0.2), (3, 0.05)]
    inputs, singles = [], []
    for i, (seed, keep) in enumerate(specs):
        m, mask = bernoulli_unit(seed, keep)
        inputs.append(UnitInput(state_of(m), mask, 10 + i))
        singles.append(train(m, mask, digits, cfg, data_seed=10 + i, engine="module"))
    many = train_many(mlp(), inputs, digits, cfg, engine=engine)
    for a, b, u in zip(singles, many, inputs):
        assert [h.iteration for h in a.history] == [h.iteration for h in b.history]
        for ha, hb in zip(a.history, b.history):
            assert hb.val_loss == pytest.approx(ha.val_loss, rel=1e-4, abs=1e-5)
            assert hb.test_accuracy == pytest.approx(ha.test_accuracy, abs=1 / 360 + 1e-9)
        for k in a.final_state:
            torch.testing.assert_close(b.final_state[k], a.final_state[k], rtol=1e-4, atol=1e-5)
        assert_pruned_weights_zero(b.final_state, u.mask)  # exactly zero in the batched path too


def test_mlp_is_the_default_engine_for_lths_mlp():
    made = [bernoulli_unit(s, 0.5) for s in range(2)]
    assert isinstance(make_engine(mlp(), states_of(made), [k for _, k in made], "cpu"), MLPEngine)


@pytest.mark.parametrize("n_units", [3, 1])  # one unit gathers/scatters through a flat index
def test_compact_optimisation_of_sparse_layers_equals_one_at_a_time(digits, n_units):
    """Units with equal per-layer counts below the compact threshold step only surviving weights."""
    cfg = TrainConfig(iterations=200, batch_size=32, lr=2e-3, eval_every=50)
    made = [equal_count_unit(s, 0.1) for s in range(n_units)]
    states = states_of(made)
    engine = make_engine(mlp(), states, [k for _, k in made], "cpu")
    assert isinstance(engine, MLPEngine)
    assert set(engine.compact) == set(prunable_parameters(made[0][0]))  # really on the compact path
    inputs = [UnitInput(st, k, 5 + i) for i, (st, (_, k)) in enumerate(zip(states, made))]
    many = train_many(mlp(), inputs, digits, cfg)
    for i, (m, k) in enumerate(made):
        single = train(m, k, digits, cfg, data_seed=5 + i, engine="module")
        assert_same_training(single, many[i])
        assert_pruned_weights_zero(many[i].final_state, k)


def test_vmap_engine_for_convolutional_models_equals_one_at_a_time(digits):
    cfg = TrainConfig(iterations=60, batch_size=16, lr=1e-3, eval_every=30)
    made = [equal_count_unit(s, 0.5, "conv2", (1, 8, 8)) for s in range(2)]
    states = states_of(made)
    assert isinstance(make_engine(build_model("conv2", (1, 8, 8), 10), states, [k for _, k in made], "cpu"),
                      VmapEngine)
    inputs = [UnitInput(st, k, i) for i, (st, (_, k)) in enumerate(zip(states, made))]
    many = train_many(build_model("conv2", (1, 8, 8), 10), inputs, digits, cfg)
    for i, (m, k) in enumerate(made):
        assert_same_training(train(m, k, digits, cfg, data_seed=i, engine="module"), many[i], rtol=1e-3, atol=1e-4)


def test_unpruned_layers_take_the_gradient_unmasked_and_equal_one_at_a_time(digits):
    """At IMP level 0 every mask is full: no gradient masking, same training as the module engine."""
    made = [bernoulli_unit(s, 1.0) for s in range(2)]
    states = states_of(made)
    engine = make_engine(mlp(), states, [k for _, k in made], "cpu")
    assert isinstance(engine, MLPEngine)
    assert engine._unmasked == set(prunable_parameters(made[0][0]))
    cfg = TrainConfig(iterations=120, batch_size=32, lr=2e-3, eval_every=40)
    inputs = [UnitInput(st, k, 3 + i) for i, (st, (_, k)) in enumerate(zip(states, made))]
    many = train_many(mlp(), inputs, digits, cfg)
    for i, (m, k) in enumerate(made):
        assert_same_training(train(m, k, digits, cfg, data_seed=3 + i, engine="module"), many[i])


def sequential_mlp(seed: int) -> nn.Sequential:
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return m


@pytest.mark.parametrize("keep", [0.5, 0.1])  # masked dense layers, and compact ones
def test_a_sequential_mlp_on_the_mlp_engine_equals_the_module_engine(digits, keep):
    """Any nn.Sequential of Flatten, Linear and ReLU is an MLP to the engines: the MLP engine trains
    it like plain autograd does, up to rounding."""
    model = sequential_mlp(0)
    g = torch.Generator().manual_seed(1)
    mask = {n: torch.rand(p.shape, generator=g) < keep for n, p in model.named_parameters() if n.endswith("weight")}
    eng = make_engine(copy.deepcopy(model), [state_of(model)], [mask], "cpu")
    assert isinstance(eng, MLPEngine)
    assert bool(eng.compact) == (keep < 0.25)
    cfg = TrainConfig(iterations=200, batch_size=32, lr=2e-3, eval_every=50)
    fast = train(copy.deepcopy(model), mask, digits, cfg, data_seed=2, engine="mlp")
    ref = train(copy.deepcopy(model), mask, digits, cfg, data_seed=2, engine="module")
    assert_same_training(ref, fast)
    assert_pruned_weights_zero(fast.final_state, mask)
    assert_pruned_weights_zero(ref.final_state, mask)


# ------------------------------------------------------------------------- choosing an engine


def test_models_with_batchnorm_or_dropout_are_not_batched():
    assert supports_batching(build_model("lenet300", (1, 28, 28), 10))
    assert supports_batching(build_model("conv2", (3, 32, 32), 10))
    assert not supports_batching(build_model("resnet20", (3, 32, 32), 10))
    assert not supports_batching(build_model("conv2-dropout", (3, 32, 32), 10))


CHOICES = {
    "mlp-100-50": (lambda: build_model("mlp-100-50", (1, 8, 8), 10), MLPEngine),
    "lenet300": (lambda: build_model("lenet300", (1, 28, 28), 10), MLPEngine),
    "sequential-flatten-linear-relu-linear": (lambda: sequential_mlp(0), MLPEngine),
    "sequential-linear-relu-linear": (lambda: nn.Sequential(nn.Linear(64, 30), nn.ReLU(), nn.Linear(30, 10)),
                                      MLPEngine),
    "sequential-with-tanh": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 30), nn.Tanh(), nn.Linear(30, 10)),
                             VmapEngine),
    "linear-without-bias": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10, bias=False)), VmapEngine),
    "conv2": (lambda: build_model("conv2", (3, 32, 32), 10), VmapEngine),  # several units; one: module
    "resnet20": (lambda: build_model("resnet20", (3, 32, 32), 10), ModuleEngine),
    "conv2-dropout": (lambda: build_model("conv2-dropout", (3, 32, 32), 10), ModuleEngine),
}


@pytest.mark.parametrize("name", list(CHOICES))
def test_the_engine_is_chosen_by_what_the_model_is(name):
    make, want = CHOICES[name]
    # one unit runs on the model itself unless the hand-written MLP engine covers it
    assert choose_engine(make(), 1) is (MLPEngine if want is MLPEngine else ModuleEngine)
    if want is ModuleEngine:  # one unit at a time only
        assert max_units(make()) == 1
        with pytest.raises(ValueError, match="one at a time"):
            choose_engine(make(), 2)
    else:
        convolutional = any(isinstance(m, nn.Conv2d) for m in make().modules())
        # vmap's grouped convolutions are slower per unit on the CPU than one unit at a time
        assert max_units(make()) == (1 if convolutional else None)
        assert max_units(make(), "cpu", EnginePolicy(batch_convolutions_on_cpu=True)) is None
        assert max_units(make(), "cuda") is None
        assert choose_engine(make(), 5) is want
    assert (linear_relu_chain(make()) is not None) == (want is MLPEngine)


def test_a_named_engine_is_checked():
    assert set(ENGINES) == {"mlp", "vmap", "module"}
    assert choose_engine(mlp(), 3, "vmap") is VmapEngine
    assert choose_engine(mlp(), 1, "module") is ModuleEngine
    with pytest.raises(ValueError, match="unknown engine 'fast'; choose one of mlp, vmap, module"):
        choose_engine(mlp(), 1, "fast")
    with pytest.raises(ValueError, match="engine 'mlp' cannot train"):
        choose_engine(build_model("conv2", (3, 32, 32), 10), 1, "mlp")
    with pytest.raises(ValueError, match="engine 'module' cannot train 2"):
        choose_engine(mlp(), 2, "module")


# ------------------------------------------------------------------------- compact and sparse kernels


def test_bf16_compact_path_equals_bf16_masked_dense_path(digits):
    """In bf16 the compact path keeps bf16 copies by scattering int16 bits and syncs the float32
    weights lazily; it must train exactly like the masked dense path, including the weights a
    rewind capture and the final state read mid-way."""
    made = [equal_count_unit(s, 0.1) for s in range(3)]
    states = states_of(made)
    masks = [k for _, k in made]
    cfg = TrainConfig(iterations=150, batch_size=32, lr=2e-3, eval_every=50, precision="bf16")
    runs = {}
    for threshold in (0.25, 0.0):  # 0.0 turns the compact path off
        policy = EnginePolicy(compact_below=threshold)
        eng = make_engine(mlp(), states, masks, "cpu", "bf16", policy=policy)
        assert bool(eng.compact) == (threshold > 0)
        captured: dict[int, dict[str, torch.Tensor]] = {}
        inputs = [UnitInput(st, k, 11 + i) for i, (st, k) in enumerate(zip(states, masks))]
        res = train_many(mlp(), inputs, digits, cfg, policy=policy, capture_steps=frozenset({70}),
                         on_capture=lambda i, s, st, captured=captured: captured.__setitem__(i, st))
        runs[threshold] = (res, captured)
    (compact, cap_c), (dense, cap_d) = runs[0.25], runs[0.0]
    for i in range(3):
        assert_same_training(dense[i], compact[i], rtol=1e-6, atol=1e-7)
        for name in cap_d[i]:
            torch.testing.assert_close(cap_c[i][name], cap_d[i][name], rtol=1e-6, atol=1e-7)
        for name, keep in masks[i].items():
            assert torch.count_nonzero(compact[i].final_state[name][~keep]) == 0
            assert torch.count_nonzero(cap_c[i][name][keep]) > 0  # the capture is not stale zeros


@pytest.mark.parametrize("gradient", ["sddmm", "dense product gathered"])
def test_sparse_layers_are_one_csr_product_for_all_units_equal_to_the_dense_product(digits, gradient):
    """The block-diagonal CSR forward, the weight gradient (the batched SDDMM, or the dense batched
    product gathered at the surviving weights: the faster one for groups between 10% and 25%) and
    the stacked CSR evaluation each cover every unit in one call, and equal the dense masked
    products unit by unit."""
    made = [equal_count_unit(s, 0.1) for s in range(3)]
    eng = sparse_engine(made, sparse_policy(grad_below=0.2 if gradient == "sddmm" else 0.05))
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
    for i, (m, _) in enumerate(made):
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


def test_groups_take_the_dense_gradient_between_10_and_25_percent_and_one_unit_the_sddmm():
    """The measured rule (EnginePolicy.sparse_grad_below and sparse_grad_below_one_unit): at 15% a
    group's first-layer weight gradient is one dense batched product gathered at the surviving
    weights, one unit's the SDDMM; below 10% both take the SDDMM. The CSR forward is used in every
    case."""
    policy = EnginePolicy(sparse_min_weights=1000)
    name = "hidden.0.weight"
    for keep, n, sddmm in ((0.15, 3, False), (0.15, 1, True), (0.08, 3, True), (0.08, 1, True)):
        made = [equal_count_unit(s, keep) for s in range(n)]
        eng = make_engine(mlp(), states_of(made), [k for _, k in made], "cpu", policy=policy)
        assert name in eng._sparse_fwd, (keep, n)
        assert (name in eng._sddmm) == sddmm and (name in eng._wgrad) != sddmm, (keep, n)


def test_sparse_kernel_path_equals_one_at_a_time(digits):
    """CSR forward, SDDMM gradient and CSR evaluation of a very sparse first layer (float32) train
    like the module engine, with the dense weights synced lazily for captures and the final state."""
    # the 64x100 and 100x50 layers qualify; one unit alone keeps the default SDDMM threshold
    policy = EnginePolicy(sparse_forward_below=0.2, sparse_grad_below=0.2, sparse_eval_below=0.2,
                          sparse_min_weights=1000)
    made = [equal_count_unit(s, 0.1) for s in range(3)]
    states = states_of(made)
    masks = [k for _, k in made]
    eng = make_engine(mlp(), states, masks, "cpu", policy=policy)
    both = {"hidden.0.weight", "hidden.1.weight"}
    assert eng._sparse_fwd == both and set(eng._sddmm) == both and eng.sparse_eval == both
    assert eng.wants_transposed_eval_input
    # the first layer's dense weights are synced lazily; the second's feed the input gradient
    assert eng._lazy == {"hidden.0.weight"}
    cfg = TrainConfig(iterations=150, batch_size=32, lr=2e-3, eval_every=50)
    captured = {}
    inputs = [UnitInput(st, k, 21 + i) for i, (st, k) in enumerate(zip(states, masks))]
    many = train_many(mlp(), inputs, digits, cfg, policy=policy,
                      capture_steps=frozenset({60}), on_capture=lambda i, s, st: captured.__setitem__(i, st))
    for i, (m, k) in enumerate(made):
        ref_capture = {}

        def grab(step, st, store=ref_capture):
            store.update(st)

        single = train(m, k, digits, cfg, data_seed=21 + i, capture_steps=frozenset({60}), on_capture=grab,
                       engine="module")
        assert_same_training(single, many[i])
        for name in ref_capture:
            torch.testing.assert_close(captured[i][name], ref_capture[name], rtol=1e-4, atol=1e-5)
        assert_pruned_weights_zero(many[i].final_state, k)


# ------------------------------------------------------------------------- evaluation


def same_to_rounding(got, want):
    """Equal up to float32 rounding: a unit's logits are one network's, but BLAS makes no promise
    that a product of another width (the units picked, or the group) sums a column in the same
    order, and one CPU's did not (last-bit differences); the AVX-512 EPYC we measure on does."""
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_sparse_evaluation_of_a_unit_does_not_depend_on_its_group(digits):
    """A unit evaluated alone, in a subset, or with its whole group gives the same logits."""
    made = [equal_count_unit(s, 0.1) for s in range(3)]
    group = sparse_engine(made)
    assert group.sparse_eval
    x = digits.test_x[:300]
    full = group.logits(x)
    for pick in ([1], [2, 0]):
        same_to_rounding(group.logits(x, units=pick), full[pick])
    for i in range(3):
        alone = sparse_engine(made[i:i + 1])
        same_to_rounding(alone.logits(x), full[i:i + 1])


@pytest.mark.parametrize("threads", [1, 2])
def test_dense_evaluation_of_a_lenet_does_not_depend_on_its_group(shared_data, threads):
    """At LeNet-300-100's real sizes on real MNIST: the first layer of every unit is one wide GEMM,
    and a unit's outputs are the same alone, in a subset, or in a group of 15, and equal to its
    own model's."""
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
            same_to_rounding(group.logits(x, units=pick), full[pick])
        for i in (0, 13):
            same_to_rounding(engine(made[i:i + 1]).logits(x), full[i:i + 1])
        with torch.no_grad():
            want = torch.stack([m(x) for m, _ in made])
        torch.testing.assert_close(full, want, rtol=1e-5, atol=1e-5)
    finally:
        torch.set_num_threads(before)


def test_sparse_evaluation_goes_in_cache_sized_chunks_with_the_same_results(digits):
    made = [equal_count_unit(s, 0.1) for s in range(3)]
    dense_eng = make_engine(mlp(), states_of(made), [k for _, k in made], "cpu")
    assert dense_eng.eval_chunk_limit == EnginePolicy().dense_eval_chunk
    eng = sparse_engine(made, replace(sparse_policy(), sparse_eval_chunk=128))
    assert eng.eval_chunk_limit == 128
    x, y = digits.test_x, digits.test_y
    chunks = eval_chunks(eng, x, y, 10_000)
    assert [c[0].shape[0] for c in chunks[:-1]] == [128] * (len(chunks) - 1) and len(chunks) > 2
    loss, acc = evaluate_many(eng, chunks)
    ref_loss, ref_acc = evaluate_many(dense_eng, eval_chunks(dense_eng, x, y, 10_000))
    assert acc == ref_acc
    assert loss == pytest.approx(ref_loss, rel=1e-5)


def test_engine_logits_of_chosen_units_equal_their_rows_of_all_units(digits):
    x = digits.test_x[:200]
    for name, keep, kind in (("mlp-100-50", 0.5, MLPEngine), ("mlp-100-50", 0.05, MLPEngine),
                             ("conv2", 0.5, VmapEngine)):
        made = [equal_count_unit(s, keep, name) for s in range(4)]
        engine = make_engine(build_model(name, (1, 8, 8), 10), states_of(made), [k for _, k in made], "cpu")
        assert isinstance(engine, kind)
        full = engine.logits(x)
        for pick in ([2], [3, 0], [0, 1, 2, 3]):
            same_to_rounding(engine.logits(x, units=pick), full[pick])
        with pytest.raises(ValueError, match="unit indices"):
            engine.logits(x, units=[4])


# ------------------------------------------------------------------------- convolutional units


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_conv_unit_trains_channels_last_and_resumes_exactly(digits, optimizer):
    """One Conv-2 unit runs on the model itself in channels-last layout; its checkpoint is in the
    standard layout, and resuming from it (moments converted back to the weights' layout, which
    torch's fused Adam reads as flat memory) gives bitwise the uninterrupted run."""
    cfg = TrainConfig(iterations=60, batch_size=32, optimizer=optimizer, lr=3e-3 if optimizer == "adam" else 0.05,
                      eval_every=20)
    m, mask = equal_count_unit(3, 0.5, "conv2")
    start = state_of(m)
    eng = make_engine(m, [start], [mask], "cpu")
    assert isinstance(eng, ModuleEngine) and eng.channels_last
    assert eng.model.features[2].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(v.is_contiguous() for v in eng.unit_state(0).values())

    whole = train(m, mask, digits, cfg, data_seed=9)
    saved = []
    m.load_state_dict(start)
    train(m, mask, digits, replace(cfg, iterations=45), data_seed=9, checkpoint_every=40,
          on_checkpoint=lambda st: saved.append(copy.deepcopy(st)))
    assert saved[-1].step == 40
    assert all(v.is_contiguous() for e in saved[-1].optimizer["state"].values()
               for v in e.values() if isinstance(v, torch.Tensor))
    m2, _ = equal_count_unit(3, 0.5, "conv2")
    resumed = train(m2, mask, digits, cfg, data_seed=9, resume=saved[-1])
    assert [h.to_dict() for h in resumed.history] == [h.to_dict() for h in whole.history]
    for k in whole.final_state:
        assert torch.equal(resumed.final_state[k], whole.final_state[k]), k
    assert_pruned_weights_zero(whole.final_state, mask)

    # the same training in the standard layout, to float rounding (a few steps: over many,
    # training amplifies rounding differences)
    short = replace(cfg, iterations=4, eval_every=2)
    runs = []
    for policy in (EnginePolicy(channels_last=False), EnginePolicy()):
        m.load_state_dict(start)
        runs.append(train(m, mask, digits, short, data_seed=9, policy=policy))
    assert_same_training(*runs, rtol=1e-3, atol=1e-4)  # Adam scales tiny gradient differences up


def test_the_conv_evaluation_chunk_is_the_cpu_cache_size_on_the_cpu_and_larger_on_a_gpu():
    pol = EnginePolicy(conv_eval_chunk=64, conv_eval_chunk_gpu=2000)
    assert pol.conv_eval_chunk_on("cpu") == 64
    assert pol.conv_eval_chunk_on(torch.device("cuda")) == 2000  # constructing the device needs no GPU
    assert pol.conv_eval_chunk_on("mps") == 2000
    with pytest.raises(ValueError, match="conv_eval_chunk_gpu"):
        EnginePolicy(conv_eval_chunk_gpu=0)


def test_vmapped_conv_units_evaluate_in_the_policys_chunks_with_the_same_results(digits):
    units = [equal_count_unit(s, 0.5, "conv2") for s in (4, 5)]
    eng = make_engine(units[0][0], [state_of(m) for m, _ in units], [k for _, k in units], "cpu",
                      engine="vmap", policy=EnginePolicy(conv_eval_chunk=64))
    assert eng.eval_chunk_limit == 64
    assert make_engine(mlp(), [state_of(mlp())] * 2, [{}] * 2, "cpu", engine="vmap").eval_chunk_limit is None
    loss, acc = evaluate_many(eng, eval_chunks(eng, digits.test_x, digits.test_y, 10_000))
    whole = make_engine(units[0][0], [state_of(m) for m, _ in units], [k for _, k in units], "cpu",
                        engine="vmap", policy=EnginePolicy(conv_eval_chunk=100_000))
    ref_loss, ref_acc = evaluate_many(whole, eval_chunks(whole, digits.test_x, digits.test_y, 10_000))
    assert torch.equal(torch.as_tensor(acc), torch.as_tensor(ref_acc))
    assert torch.allclose(torch.as_tensor(loss), torch.as_tensor(ref_loss), rtol=1e-5)


def test_a_conv_unit_evaluates_in_cache_sized_chunks_with_the_same_results(digits):
    m, mask = equal_count_unit(4, 0.5, "conv2")
    eng = make_engine(m, [state_of(m)], [mask], "cpu", policy=EnginePolicy(conv_eval_chunk=64))
    assert eng.eval_chunk_limit == 64
    assert make_engine(mlp(), [state_of(mlp())], [{}], "cpu", engine="module").eval_chunk_limit is None
    chunks = eval_chunks(eng, digits.test_x, digits.test_y, 10_000)
    assert [c[0].shape[0] for c in chunks[:-1]] == [64] * (len(chunks) - 1) and len(chunks) > 2
    loss, acc = evaluate_many(eng, chunks)
    whole = make_engine(m, [state_of(m)], [mask], "cpu", policy=EnginePolicy(conv_eval_chunk=100_000))
    ref_loss, ref_acc = evaluate_many(whole, eval_chunks(whole, digits.test_x, digits.test_y, 10_000))
    assert acc == ref_acc
    assert loss == pytest.approx(ref_loss, rel=1e-5)
