"""Evaluating N units on a whole split, and when the test split needs evaluating."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .engines.base import Engine


def needs_test(test_eval: str, iteration: int, last_iteration: int, val_loss: float,
               best_val_loss: float) -> bool:
    """Whether an evaluation point measures the test split.

    ``"every"``: always. ``"best"``: at the last iteration (the final test accuracy) and wherever
    ``val_loss`` is strictly below ``best_val_loss``, the minimum of the earlier points. The early
    stop is the first point with the minimum validation loss, which is always such a point, so its
    test accuracy is always measured."""
    if test_eval == "every":
        return True
    if test_eval != "best":
        raise ValueError(f"test_eval = {test_eval!r}: choose every or best")
    return iteration == last_iteration or val_loss < best_val_loss


def eval_chunks(engine: Engine, x: torch.Tensor, y: torch.Tensor, batch: int) -> list[tuple]:
    """A split in evaluation chunks of at most ``batch`` images (fewer where the engine asks:
    :attr:`Engine.eval_chunk_limit`), each with its transposed copy when the engine's first layer
    is a sparse product (made once per training call: the split does not change)."""
    want = engine.wants_transposed_eval_input
    batch = min(batch, engine.eval_chunk_limit or batch)
    chunks = []
    for i in range(0, x.shape[0], batch):
        xb = x[i: i + batch]
        chunks.append((xb, y[i: i + batch], xb.reshape(xb.shape[0], -1).t().contiguous() if want else None))
    return chunks


@torch.no_grad()
def evaluate_many(engine: Engine, chunks: list[tuple], units: Sequence[int] | None = None,
                  loss_fn=None) -> tuple[list[float], list[float]]:
    """Mean loss and accuracy over a whole split (one batched forward per chunk) of every unit, or
    of the units listed in ``units`` (in that order). ``loss_fn(logits, targets)`` (a mean over
    the batch) replaces cross-entropy where given; accuracy is always of the arg-max class."""
    n_units = engine.n_units if units is None else len(units)
    device = engine.device
    loss = torch.zeros(n_units, dtype=torch.float64, device=device)
    correct = torch.zeros(n_units, dtype=torch.int64, device=device)
    n = 0
    for xb, yb, xt in chunks:
        out = engine.logits(xb, xt=xt, units=units)  # [N, b, classes]
        if loss_fn is None:
            ce = F.cross_entropy(out.flatten(0, 1), yb.repeat(n_units), reduction="none")
            loss += ce.view(n_units, -1).double().sum(1)
        else:
            loss += torch.stack([loss_fn(o, yb).double() * yb.shape[0] for o in out])
        correct += (out.argmax(2) == yb).sum(1)
        n += int(xb.shape[0])
    n = max(n, 1)
    return (loss / n).tolist(), (correct.double() / n).tolist()
