"""The CUDA path (skipped without a GPU; benchmarks/gpu.sh runs these on a lent GPU machine):
engines on the GPU train like the module engine one unit at a time, a GPU unit computes what the
CPU computes up to float rounding, and `lth run --device cuda --deterministic` is repeatable and
resumes (a longer rerun extends a finished run) to the same bytes as one uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lth.cli import main
from lth.config import TrainConfig
from lth.data import load_splits
from lth.training import UnitInput, train, train_many
from lth.training.engines import EnginePolicy, MLPEngine, VmapEngine, make_engine

from .units import assert_pruned_weights_zero, assert_same_training, bernoulli_unit, equal_count_unit, mlp, state_of

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu.sh runs it)")


@pytest.fixture(scope="module")
def gpu_digits():
    return load_splits("digits", val_size=300, split_seed=0, device="cuda")


@pytest.fixture(scope="module")
def cpu_digits():
    return load_splits("digits", val_size=300, split_seed=0)


def to(state: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in state.items()}


@pytest.mark.parametrize("engine", ["mlp", "vmap"])
def test_units_trained_together_on_the_gpu_equal_the_module_engine_one_at_a_time(gpu_digits, engine):
    cfg = TrainConfig(iterations=300, batch_size=32, lr=1e-3, eval_every=50)
    inputs, singles = [], []
    for i, (seed, keep) in enumerate([(0, 1.0), (1, 0.5), (2, 0.2)]):
        m, mask = bernoulli_unit(seed, keep)
        inputs.append(UnitInput(state_of(m), mask, 10 + i))
        singles.append(train(m, mask, gpu_digits, cfg, data_seed=10 + i, engine="module"))
    many = train_many(mlp(), inputs, gpu_digits, cfg, engine=engine)
    for a, b, u in zip(singles, many, inputs):
        assert b.final_state[next(iter(b.final_state))].device.type == "cuda"
        assert_same_training(a, b, rtol=1e-3, atol=1e-4)
        assert_pruned_weights_zero(b.final_state, to(u.mask, "cuda"))


def test_the_engines_on_the_gpu_are_the_batched_ones_and_conv_units_evaluate_in_gpu_chunks():
    made = [bernoulli_unit(s, 0.5) for s in range(2)]
    assert isinstance(make_engine(mlp(), [state_of(m) for m, _ in made], [k for _, k in made], "cuda"), MLPEngine)
    conv = [equal_count_unit(s, 0.5, "conv2") for s in range(2)]
    eng = make_engine(conv[0][0], [state_of(m) for m, _ in conv], [k for _, k in conv], "cuda")
    assert isinstance(eng, VmapEngine)
    assert eng.eval_chunk_limit == EnginePolicy().conv_eval_chunk_gpu


# Adam divides by the gradient's running magnitude, so last-bit differences in near-zero gradients
# become whole steps: a Conv-2 unit under Adam drifted from the CPU's by more than 2e-3 in 100
# iterations on an H100, with and without TF32. Plain SGD keeps differences at rounding size.
@pytest.mark.parametrize("arch, optimizer, lr", [("mlp-100-50", "adam", 1e-3), ("conv2", "sgd", 0.05)])
def test_a_unit_on_the_gpu_computes_what_it_computes_on_the_cpu(gpu_digits, cpu_digits, arch, optimizer, lr):
    cfg = TrainConfig(iterations=100, batch_size=32, optimizer=optimizer, lr=lr, eval_every=25)
    m, mask = equal_count_unit(3, 0.5, arch)
    start = state_of(m)
    cpu = train(m, mask, cpu_digits, cfg, data_seed=4)
    m.load_state_dict(start)
    gpu = train(m, mask, gpu_digits, cfg, data_seed=4)
    gpu.final_state = to(gpu.final_state, "cpu")
    assert_same_training(cpu, gpu, rtol=2e-3, atol=2e-4)


RUN = ["run", "--preset", "digits-quick", "--trials", "1", "--iterations", "120", "--device", "cuda",
       "--deterministic", "--set", "train.eval_every=40", "--quiet"]


def unit_files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name in ("metrics.jsonl", "mask.pt", "final.pt", "theta0.pt")}


def test_a_deterministic_gpu_run_repeats_and_a_longer_rerun_extends_it_to_the_same_bytes(tmp_path):
    assert main([*RUN, "--levels", "2", "--out", str(tmp_path / "a")]) == 0
    assert main([*RUN, "--levels", "2", "--out", str(tmp_path / "b")]) == 0
    assert main([*RUN, "--levels", "1", "--out", str(tmp_path / "c")]) == 0
    assert main([*RUN, "--levels", "2", "--out", str(tmp_path / "c")]) == 0  # resumes: level 2 only
    (a,), (b,), (c,) = (list((tmp_path / d).iterdir()) for d in "abc")
    files = unit_files(a)
    assert files and any(k.endswith("metrics.jsonl") for k in files)
    assert unit_files(b) == files
    assert unit_files(c) == files
    records = json.loads((a / "summary.json").read_text())
    assert {r["level"] for r in records} == {0, 1, 2}
    assert all("cuda" in r["machine"] for r in records)
