"""Evaluation (lth.training.evaluation): when the test split is measured, and the batched
evaluation of N units against a plain one of each model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lth.config import ConfigError, RuntimeConfig
from lth.training.engines import make_engine
from lth.training.evaluation import eval_chunks, evaluate_many, needs_test

from .units import equal_count_unit, mlp, states_of


def test_needs_test_is_true_exactly_at_new_minima_and_the_last_iteration():
    assert needs_test("every", 50, 100, 9.0, 1.0)
    assert needs_test("best", 0, 100, 2.0, math.inf)  # the first point is always a new minimum
    assert needs_test("best", 50, 100, 0.9, 1.0)
    assert not needs_test("best", 50, 100, 1.0, 1.0)  # a tie is not the first minimum
    assert not needs_test("best", 50, 100, 1.1, 1.0)
    assert needs_test("best", 100, 100, 1.1, 1.0)  # the final test accuracy
    with pytest.raises(ValueError, match="every or best"):
        needs_test("sometimes", 0, 100, 1.0, 1.0)


def test_test_eval_is_validated_with_the_fix_in_the_message():
    with pytest.raises(ConfigError, match="runtime.test_eval = 'sometimes'.*every, best"):
        RuntimeConfig(test_eval="sometimes")


def plain_evaluation(model, x, y) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of one model over a whole split, in one batch."""
    with torch.no_grad():
        out = model(x)
    return F.cross_entropy(out, y).item(), (out.argmax(1) == y).double().mean().item()


@pytest.mark.parametrize("engine", ["mlp", "vmap", "module"])
def test_evaluate_many_equals_a_plain_evaluation_of_each_unit_in_any_chunking(digits, engine):
    n = 1 if engine == "module" else 3
    made = [equal_count_unit(s, 0.5) for s in range(n)]
    eng = make_engine(mlp(), states_of(made), [k for _, k in made], "cpu", engine=engine)
    x, y = digits.test_x, digits.test_y
    chunks = eval_chunks(eng, x, y, 100)
    assert len(chunks) == math.ceil(x.shape[0] / min(100, eng.eval_chunk_limit or 100))
    loss, acc = evaluate_many(eng, chunks)
    whole_loss, whole_acc = evaluate_many(eng, eval_chunks(eng, x, y, 10_000))
    for i, (m, _) in enumerate(made):
        want_loss, want_acc = plain_evaluation(m, x, y)
        assert acc[i] == whole_acc[i] == pytest.approx(want_acc, abs=1e-12)
        assert loss[i] == pytest.approx(want_loss, rel=1e-5)
        assert whole_loss[i] == pytest.approx(want_loss, rel=1e-5)
    if n > 1:  # a chosen few units, in the order asked
        sub_loss, sub_acc = evaluate_many(eng, chunks, [2, 0])
        assert (sub_loss, sub_acc) == ([loss[2], loss[0]], [acc[2], acc[0]])
