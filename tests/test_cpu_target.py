"""The cpu target against the numpy target: same spec, same initial weights,
same batches, several training steps; then evaluate and predict. The specs
are built from the registries, so a new activation, loss or optimizer is
covered with no edit here."""
from __future__ import annotations

import pytest

from modelc.compiler import elementwise
from tests.formula_cases import loss_specs, optimizer_calls
from tests.target_agreement import assert_close, compare

ACTIVATIONS = sorted(elementwise.ACTIVATIONS)


def _every_activation_spec() -> str:
    """One branch per activation from a shared input, joined by concat: a graph, not a chain."""
    lines = [f"    h -> dense(3, {name}) => a_{name}" for name in ACTIVATIONS]
    joined = ", ".join(f"a_{name}" for name in ACTIVATIONS)
    return f"""
model every_activation
input x: f32[2, 3]
target y: int[] classes 3
network {{
    x -> flatten -> dense(5, tanh) => h
{chr(10).join(lines)}
    ({joined}) -> concat -> dense(4, relu) => j
    (j, j) -> add -> dropout(0.3) -> dense(3) -> log_softmax(temperature=1.3) -> dense(3, softmax(temperature=0.6)) => p
}}
loss sparse_categorical_crossentropy(y, p)
optimizer adam(lr=0.01)
metrics accuracy
"""


LOSS_SPECS = loss_specs()
OPTIMIZER_CALLS = optimizer_calls()


def _loss_spec(loss_key: str, optimizer: str, schedule: str = "") -> str:
    target, last, loss, metrics = LOSS_SPECS[loss_key]
    return f"""
model loss_{loss_key}
input x: f32[4]
{target}
network {{
    x -> dense(6, elu) -> {last} => p
}}
loss {loss}
optimizer {optimizer}
metrics {metrics}
train {{
    {schedule}
}}
"""


def test_every_activation_and_graph_ops():
    assert_close(compare(_every_activation_spec(), "cpu"))


@pytest.mark.parametrize("loss_key", sorted(LOSS_SPECS))
def test_every_loss(loss_key):
    assert_close(compare(_loss_spec(loss_key, "adam(lr=0.01)"), "cpu"))


@pytest.mark.parametrize("name", sorted(OPTIMIZER_CALLS))
def test_every_optimizer(name):
    assert_close(compare(_loss_spec("mean_squared_error", OPTIMIZER_CALLS[name]), "cpu"))


@pytest.mark.parametrize("schedule", ["schedule exponential_decay(rate=0.5, steps=2)",
                                      "schedule exponential_decay(rate=0.5, steps=2, staircase=true)",
                                      "schedule inverse_time_decay(rate=0.5, steps=1)",
                                      "schedule cosine_decay(steps=3, alpha=0.1)"])
def test_learning_rate_schedules(schedule):
    assert_close(compare(_loss_spec("mean_squared_error", "sgd(lr=0.1, momentum=0.5)", schedule), "cpu", steps=4))
