"""Each primitive's NumPy reference against values computed by hand (the first
rung of verification: everything else is tested against these references)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from modelc.compiler import elementwise
from modelc.compiler.formulas import learning_rate
from modelc.compiler.primitives import PRIMITIVES, dropout_hash, dropout_uniform


def impl(name, *args, **attrs):
    return PRIMITIVES[name].impl(*[np.asarray(a) for a in args], **attrs)


def f(*values):
    return np.array(values, dtype=np.float64)


def test_matmul_and_transposes():
    a = f([1, 2], [3, 4])
    b = f([5, 6], [7, 8])
    assert impl("matmul", a, b).tolist() == [[19, 22], [43, 50]]
    assert impl("matmul", a, b, ta=True).tolist() == [[26, 30], [38, 44]]
    assert impl("matmul", a, b, tb=True).tolist() == [[17, 23], [39, 53]]


def test_bias_add_and_its_reduction():
    x = f([1, 2, 3], [4, 5, 6])
    assert impl("bias_add", x, f(10, 20, 30)).tolist() == [[11, 22, 33], [14, 25, 36]]
    assert impl("sum_to_last", x).tolist() == [5, 7, 9]


def test_structure():
    x = np.arange(12.0).reshape(2, 2, 3)
    assert impl("reshape", x, shape=(6,)).shape == (2, 6)
    assert impl("concat", f([1], [2]), f([3, 4], [5, 6]), axis=1).tolist() == [[1, 3, 4], [2, 5, 6]]
    assert impl("slice", f([1, 3, 4], [2, 5, 6]), axis=1, start=1, stop=3).tolist() == [[3, 4], [5, 6]]
    assert impl("add", f(1, 2), f(3, 4), f(5, 6)).tolist() == [9, 12]


@pytest.mark.parametrize("name,x,expected", [
    ("relu", [-2.0, 0.0, 3.0], [0.0, 0.0, 3.0]),
    ("linear", [-2.0, 3.0], [-2.0, 3.0]),
    ("sigmoid", [0.0, math.log(3.0)], [0.5, 0.75]),
    ("tanh", [0.0, math.atanh(0.5)], [0.0, 0.5]),
    ("leaky_relu", [-1.0, 2.0], [-0.2, 2.0]),
    ("elu", [-math.log(2.0), 1.0], [-0.5, 1.0]),
    ("softplus", [0.0, math.log(math.e - 1)], [math.log(2.0), 1.0]),
    ("gelu", [0.0, 1.0], [0.0, 0.5 * (1 + math.erf(1 / math.sqrt(2)))]),
    ("silu", [0.0, math.log(3.0)], [0.0, 0.75 * math.log(3.0)]),
    ("selu", [0.0, 1.0], [0.0, 1.0507009873554805]),
])
def test_activation_values(name, x, expected):
    params = elementwise.ACTIVATIONS[name].params
    np.testing.assert_allclose(impl("act", f(*x), fn=name, **params), expected, rtol=1e-12, atol=1e-15)


def test_every_activation_has_a_hand_value():
    hand = {"relu", "linear", "sigmoid", "tanh", "leaky_relu", "elu", "softplus", "gelu", "silu", "selu"}
    assert hand == set(elementwise.ACTIVATIONS)


def test_sigmoid_is_finite_at_extremes():
    out = impl("act", np.array([-1000.0, 1000.0], np.float32), fn="sigmoid")
    assert out.tolist() == [0.0, 1.0]


def test_softmax_and_temperature():
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(impl("softmax", f([1, 2, 3])), [e / e.sum()])
    e2 = np.exp(np.array([1.0, 2.0, 3.0]) / 0.5)
    np.testing.assert_allclose(impl("softmax", f([1, 2, 3]), temperature=0.5), [e2 / e2.sum()])
    np.testing.assert_allclose(impl("log_softmax", f([1, 2, 3])), [np.log(e / e.sum())])
    big = impl("softmax", np.array([[1000.0, 1000.0]], np.float32))
    assert big.tolist() == [[0.5, 0.5]]


def test_mean_and_its_gradient():
    assert float(impl("mean", f(1, 2, 6))) == 3.0
    assert impl("mean_grad", np.float64(6.0), f(1, 2, 6)).tolist() == [2.0, 2.0, 2.0]


def test_losses_per_sample():
    assert impl("mean_squared_error", f([0, 0], [1, 1]), f([1, 3], [1, 1])).tolist() == [5.0, 0.0]
    assert impl("mean_absolute_error", f([0, 0]), f([1, -3])).tolist() == [2.0]
    # huber with delta 1: 0.5 * 0.5^2 inside, 1 * 2 - 0.5 outside
    assert impl("huber", f([0, 0]), f([0.5, 2.0]), delta=1.0).tolist() == [(0.125 + 1.5) / 2]
    # sparse = one-hot: -log of the probability of the true class
    p = f([0.2, 0.8], [0.6, 0.4])
    np.testing.assert_allclose(impl("sparse_categorical_crossentropy", np.array([1, 0]), p),
                               [-math.log(0.8), -math.log(0.6)])
    np.testing.assert_allclose(impl("kl_divergence", f([0.5, 0.5]), f([0.25, 0.75])),
                               [0.5 * math.log(2) + 0.5 * math.log(2 / 3)])


def test_metrics():
    p = f([0.1, 0.9], [0.8, 0.2], [0.5, 0.5])
    assert impl("categorical_hit", np.array([1, 1, 0]), p).tolist() == [1.0, 0.0, 1.0]   # ties: the first
    assert impl("categorical_hit", f([0, 1], [0, 1], [1, 0]), p).tolist() == [1.0, 0.0, 1.0]
    assert impl("binary_hits", f([1], [0], [1]), f([0.7], [0.6], [0.5])).tolist() == [1.0, 0.0, 0.0]


def test_adam_first_step_by_hand():
    # Keras Adam, step 1: m = 0.1 g, v = 0.001 g^2, alpha = lr * sqrt(1 - 0.999) / (1 - 0.9)
    w, g = np.array([1.0], np.float32), np.array([0.5], np.float32)
    m, v = np.zeros(1, np.float32), np.zeros(1, np.float32)
    impl("adam_update", w, g, m, v, 0, lr=0.01)
    alpha = 0.01 * math.sqrt(0.001) / 0.1
    expected = 1.0 - alpha * 0.05 / (math.sqrt(0.001 * 0.25) + 1e-7)
    assert m[0] == pytest.approx(0.05) and v[0] == pytest.approx(0.00025)
    assert w[0] == pytest.approx(expected, rel=1e-6)


def test_sgd_momentum_and_nesterov_by_hand():
    for nesterov, expected in ((False, 1 - 0.1 * 2), (True, 1 + 0.9 * (-0.2) - 0.2)):
        w, g, u = np.array([1.0]), np.array([2.0]), np.zeros(1)
        impl("sgd_update", w, g, u, 0, lr=0.1, momentum=0.9, nesterov=nesterov)
        assert u[0] == pytest.approx(-0.2) and w[0] == pytest.approx(expected)


def test_rmsprop_by_hand():
    w, g, u, q = np.array([1.0]), np.array([2.0]), np.zeros(1), np.zeros(1)
    impl("rmsprop_update", w, g, u, q, 0, lr=0.01, rho=0.9)
    assert u[0] == pytest.approx(0.4)
    assert w[0] == pytest.approx(1 - 0.01 * 2 / math.sqrt(0.4 + 1e-7))


def test_schedules_by_hand():
    assert learning_rate(10, 0.1, ("exponential_decay", 0.5, 10, False)) == pytest.approx(0.05)
    assert learning_rate(15, 0.1, ("exponential_decay", 0.5, 10, True)) == pytest.approx(0.05)
    assert learning_rate(10, 0.1, ("inverse_time_decay", 1.0, 10, False)) == pytest.approx(0.05)
    assert learning_rate(5, 0.1, ("cosine_decay", 10, 0.0)) == pytest.approx(0.05)
    assert learning_rate(50, 0.1, ("cosine_decay", 10, 0.2)) == pytest.approx(0.02)


def test_dropout_keeps_about_one_minus_rate_and_rescales():
    x = np.ones((200, 50), np.float32)
    y, mask = impl("dropout", x, np.int64(4), rate=0.3, seed=11)
    kept = (mask > 0).mean()
    assert 0.67 < kept < 0.73
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.7], rtol=1e-6)
    # the vectorised hash is the scalar one every compiled target uses
    assert np.array_equal(dropout_uniform(11, 4, 1000), [dropout_hash(11, 4, i) for i in range(1000)])
