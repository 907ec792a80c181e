"""Numeric modes (lth.training.precision): bf16 matrix products and flushing denormals, both of
which trade nothing reported for speed; IEEE fp32 (no TF32) while training in fp32 on a GPU."""

from __future__ import annotations

import pytest
import torch

from lth.config import TrainConfig
from lth.training import UnitInput, train, train_many
from lth.training.precision import ieee_fp32_on_gpu

from .units import equal_count_unit, mlp, state_of, states_of


def test_bf16_products_train_close_to_fp32(digits):
    """bf16 changes rounding, not the result: final accuracy within a few points of fp32."""
    made = [equal_count_unit(s, 0.5) for s in range(2)]
    states = states_of(made)
    inputs = [UnitInput(st, k, i) for i, (st, (_, k)) in enumerate(zip(states, made))]
    out = {}
    for prec in ("fp32", "bf16"):
        cfg = TrainConfig(iterations=400, batch_size=32, lr=2e-3, eval_every=100, precision=prec)
        out[prec] = train_many(mlp(), inputs, digits, cfg)
    for a, b in zip(out["fp32"], out["bf16"]):
        assert a.history[-1].test_accuracy > 0.8
        assert abs(a.history[-1].test_accuracy - b.history[-1].test_accuracy) < 0.04
        assert a.final_state["out.weight"].dtype == b.final_state["out.weight"].dtype == torch.float32


def denormal_survives() -> bool:
    return (torch.tensor([1e-37]) / 1000).item() != 0.0  # 1e-40 is denormal


@pytest.mark.parametrize("batched", [False, True])
def test_flush_denormals_is_on_while_training_and_off_after(digits, batched):
    cfg = TrainConfig(iterations=100, batch_size=32, lr=3e-3, eval_every=50)
    m, mask = equal_count_unit(2, 0.5)
    seen: list[bool] = []
    assert denormal_survives()
    if batched:
        train_many(mlp(), [UnitInput(state_of(m), mask, 1)], digits, cfg,
                   flush_denormals=True, on_eval=lambda i, p: seen.append(denormal_survives()))
    else:
        train(m, mask, digits, cfg, data_seed=1, flush_denormals=True,
              on_eval=lambda p: seen.append(denormal_survives()))
    assert seen == [False, False, False]  # flushed at every evaluation point (0, 50, 100)
    assert denormal_survives()  # and the process is back to IEEE behaviour


def test_flush_denormals_is_restored_when_training_fails(digits):
    cfg = TrainConfig(iterations=100, batch_size=32, eval_every=50)
    m, mask = equal_count_unit(3, 0.5)

    def boom(p):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(m, mask, digits, cfg, data_seed=1, flush_denormals=True, on_eval=boom)
    assert denormal_survives()


def test_flush_denormals_leaves_a_short_runs_numbers_unchanged(digits):
    """Flushing touches only values below 1.2e-38, which vanish beside anything of normal size: a
    short run reports identical numbers. (Over 50K iterations a rare last-bit difference can
    survive and grow: the LeNet figure rerun matched bitwise in 137 of 245 units.)"""
    cfg = TrainConfig(iterations=1500, batch_size=32, lr=3e-3, eval_every=100)
    made = [equal_count_unit(s, 0.5) for s in range(3)]
    inputs = [UnitInput(state_of(m), k, 40 + i) for i, (m, k) in enumerate(made)]
    template = mlp()
    plain = train_many(template, inputs, digits, cfg)
    flushed = train_many(template, inputs, digits, cfg, flush_denormals=True)
    for a, b in zip(plain, flushed):
        assert [(h.iteration, h.val_loss, h.test_accuracy) for h in a.history] == \
            [(h.iteration, h.val_loss, h.test_accuracy) for h in b.history]


def _tf32_state():
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_fp32_on_a_gpu_switches_tf32_off_while_training_and_restores_it_after():
    before = _tf32_state()
    with ieee_fp32_on_gpu(torch.device("cuda"), "fp32"):  # the switches are settable without a GPU
        inside = _tf32_state()
    assert inside in (("ieee", "ieee"), (False, False))
    assert _tf32_state() == before
    with pytest.raises(RuntimeError), ieee_fp32_on_gpu(torch.device("cuda"), "fp32"):
        raise RuntimeError("training failed")
    assert _tf32_state() == before


@pytest.mark.parametrize("device, precision", [("cpu", "fp32"), ("cuda", "bf16")])
def test_tf32_switches_are_untouched_on_the_cpu_and_in_bf16(device, precision):
    before = _tf32_state()
    with ieee_fp32_on_gpu(torch.device(device), precision):
        assert _tf32_state() == before


def test_a_forward_pass_in_fp32_on_a_gpu_runs_without_tf32():
    from lth.training import autocast

    before = _tf32_state()
    with autocast(torch.device("cuda"), "fp32"):
        assert _tf32_state() in (("ieee", "ieee"), (False, False))
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.is_autocast_enabled("cpu") and _tf32_state() == before
    assert _tf32_state() == before
