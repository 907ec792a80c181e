"""DirectFusedAdam takes the same steps as torch.optim.Adam(fused=True), bit for bit, and really
skips torch.optim's per-step path once its state exists."""

from __future__ import annotations

import pytest
import torch

from lth.config import TrainConfig
from lth.training.optimizers import DirectFusedAdam, make_optimizer


def _params(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(30, 20, generator=g), torch.randn(30, generator=g), torch.randn(5, 30, generator=g)]


def _run(opt, params, steps: int, seed: int, skip: int | None = None) -> None:
    g = torch.Generator().manual_seed(seed)
    for s in range(steps):
        for i, p in enumerate(params):
            p.grad = None if (skip is not None and i == skip and s % 2) else torch.randn(p.shape, generator=g)
        for group in opt.param_groups:
            group["lr"] = 1e-2 * 0.9 ** s  # the trainers set the lr every step
        opt.step()


@pytest.mark.parametrize("kw", [{}, {"weight_decay": 1e-3}, {"weight_decay": 1e-2, "decoupled_weight_decay": True},
                                {"betas": (0.8, 0.99), "eps": 1e-6}])
def test_direct_fused_adam_equals_torch_fused_adam_bitwise(kw):
    ref, ours = _params(0), _params(0)
    a = torch.optim.Adam([{"params": ref[:2]}, {"params": ref[2:], "weight_decay": 0.0}], lr=1e-2, fused=True, **kw)
    b = DirectFusedAdam([{"params": ours[:2]}, {"params": ours[2:], "weight_decay": 0.0}], lr=1e-2, **kw)
    _run(a, ref, 25, seed=1)
    _run(b, ours, 25, seed=1)
    assert b._lists is not None  # the direct path was taken
    for p, q in zip(ref, ours):
        assert torch.equal(p, q)
    for p, q in zip(ref, ours):
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a.state[p][k], b.state[q][k])


def test_direct_path_skips_torch_adam_step_after_the_first(monkeypatch):
    calls = []
    orig = torch.optim.Adam.step

    def counting(self, closure=None):
        calls.append(1)
        return orig(self, closure)

    monkeypatch.setattr(torch.optim.Adam, "step", counting)
    params = _params(0)
    opt = DirectFusedAdam(params, lr=1e-2)
    _run(opt, params, 10, seed=1)
    assert len(calls) == 1  # the first step makes the state through Adam's own code


def test_missing_gradient_falls_back_like_torch():
    ref, ours = _params(0), _params(0)
    a = torch.optim.Adam(ref, lr=1e-2, fused=True)
    b = DirectFusedAdam(ours, lr=1e-2)
    _run(a, ref, 12, seed=2, skip=1)
    _run(b, ours, 12, seed=2, skip=1)
    for p, q in zip(ref, ours):
        assert torch.equal(p, q)
        assert torch.equal(a.state[p]["step"], b.state[q]["step"])


def test_state_dict_round_trip_continues_identically():
    ref, ours = _params(0), _params(0)
    a = torch.optim.Adam(ref, lr=1e-2, fused=True)
    b = DirectFusedAdam(ours, lr=1e-2)
    _run(a, ref, 6, seed=3)
    _run(b, ours, 6, seed=3)
    resumed = [p.clone() for p in ours]
    c = DirectFusedAdam(resumed, lr=1e-2)
    c.load_state_dict(b.state_dict())
    _run(a, ref, 6, seed=4)
    _run(c, resumed, 6, seed=4)
    for p, q in zip(ref, resumed):
        assert torch.equal(p, q)


def test_step_hooks_still_run():
    params = _params(0)
    opt = DirectFusedAdam(params, lr=1e-2)
    seen = []
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append(1))
    _run(opt, params, 4, seed=1)
    assert len(seen) == 4


def test_make_optimizer_uses_direct_fused_adam_on_cpu():
    opt = make_optimizer(_params(0), TrainConfig(optimizer="adam", lr=1e-3))
    assert isinstance(opt, DirectFusedAdam)
