"""Units (a model's start state and its mask) for the training tests, and how two trainings are
compared."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lth.models import build_model, initialize, prunable_parameters
from lth.pruning import apply_mask, random_mask_like

# (every engine zeroes pruned weights itself; the tests apply the mask too so that the start
# states they hand around are the masked ones)


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def states_of(made) -> list[dict[str, torch.Tensor]]:
    """Copies of the state dicts of ``(model, mask)`` pairs, the engines' starting weights."""
    return [state_of(m) for m, _ in made]


def mlp() -> nn.Module:
    return build_model("mlp-100-50", (1, 8, 8), 10)


def bernoulli_unit(seed: int, keep: float):
    """An mlp-100-50 unit whose mask keeps each weight with probability ``keep`` (per-layer counts
    differ from unit to unit)."""
    m = mlp()
    initialize(m, torch.Generator().manual_seed(seed))
    params = dict(m.named_parameters())
    g = torch.Generator().manual_seed(seed + 1000)
    mask = {n: torch.rand(params[n].shape, generator=g) < keep for n in prunable_parameters(m)}
    apply_mask(m, mask)
    return m, mask


def equal_count_unit(seed: int, keep: float, name: str = "mlp-100-50", shape=(1, 8, 8)):
    """A unit whose mask keeps exactly round(keep * size) weights per layer (as IMP levels do)."""
    m = build_model(name, shape, 10)
    initialize(m, torch.Generator().manual_seed(seed))
    params = dict(m.named_parameters())
    base = {}
    for n in prunable_parameters(m):
        b = torch.zeros(params[n].numel(), dtype=torch.bool)
        b[: max(1, round(keep * b.numel()))] = True
        base[n] = b.view(params[n].shape)
    mask = random_mask_like(base, torch.Generator().manual_seed(seed + 7))
    apply_mask(m, mask)
    return m, mask


def assert_same_training(a, b, rtol=1e-4, atol=1e-5):
    """Same evaluation points, validation losses and final weights up to the tolerances."""
    assert [h.iteration for h in a.history] == [h.iteration for h in b.history]
    for ha, hb in zip(a.history, b.history):
        assert hb.val_loss == pytest.approx(ha.val_loss, rel=rtol, abs=atol)
    for k in a.final_state:
        torch.testing.assert_close(b.final_state[k], a.final_state[k], rtol=rtol, atol=atol)


def assert_pruned_weights_zero(state: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> None:
    for name, keep in mask.items():
        assert torch.count_nonzero(state[name][~keep]) == 0, name
