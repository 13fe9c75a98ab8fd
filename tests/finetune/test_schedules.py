"""Learning-rate schedules: constant, cosine to zero, step decay per epoch, linear warm-up."""

import math

import pytest

from qdq_onnx.errors import QdqError
from qdq_onnx.finetune.schedules import SCHEDULES, learning_rate


def test_constant_and_cosine():
    assert learning_rate(1.0, 0, 100, "constant") == 1.0
    assert learning_rate(1.0, 99, 100, "constant") == 1.0
    assert learning_rate(1.0, 0, 100, "cosine") == 1.0
    assert learning_rate(1.0, 50, 100, "cosine") == pytest.approx(0.5)
    assert learning_rate(1.0, 100, 100, "cosine") == pytest.approx(0.0)
    assert learning_rate(1.0, 150, 100, "cosine") == pytest.approx(0.0)  # clamped at the end


def test_cosine_is_monotone_and_symmetric():
    rates = [learning_rate(2.0, s, 40, "cosine") for s in range(41)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    for s in range(41):
        assert rates[s] + rates[40 - s] == pytest.approx(2.0)


def test_step_decays_by_epoch():
    kw = {"step_size": 2, "gamma": 0.5, "steps_per_epoch": 10}
    assert [learning_rate(1.0, s, 100, "step", **kw) for s in (0, 19, 20, 39, 40)] == \
        [1.0, 1.0, 0.5, 0.5, 0.25]


def test_warmup_is_linear_then_the_schedule():
    assert learning_rate(1.0, 4, 100, "cosine", warmup_steps=10) == pytest.approx(0.5)
    assert learning_rate(1.0, 0, 100, "constant", warmup_steps=4) == pytest.approx(0.25)
    after = learning_rate(1.0, 10, 110, "cosine", warmup_steps=10)
    assert after == pytest.approx(1.0)  # the cosine starts where the warm-up ends
    mid = learning_rate(1.0, 60, 110, "cosine", warmup_steps=10)
    assert mid == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_unknown_schedule_is_an_error():
    assert set(SCHEDULES) == {"constant", "cosine", "step"}
    with pytest.raises(QdqError, match="unknown schedule"):
        learning_rate(1.0, 0, 10, "linear")
