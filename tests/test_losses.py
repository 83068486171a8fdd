"""modelc.losses against Keras's reference values and independent float64 formulas.

Expected values are either the literal numbers of the Keras tutorials' table (Keras's
documented outputs) or computed here with plain NumPy from the formula stated
beside each test, never by calling the function under test.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import modelc
from modelc import losses
from modelc.compiler.primitives import PRIMITIVES
from modelc.errors import ModelcError

EPS = 1e-7


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# ---------------------------------------------------------------- the Keras tutorials' table

TABLE = [
    ("categorical_crossentropy", [[0, 1, 0], [0, 0, 1]], [[0.05, 0.9, 0.05], [0.3, 0.2, 0.5]], 0.39925388),
    ("categorical_crossentropy", [[0, 1, 0], [0, 0, 1]], [[0.05, 0.9, 0.05], [0.05, 0.05, 0.9]], 0.105360545),
    ("binary_crossentropy", [[0], [1]], [[0.4], [0.6]], 0.5108254),
    # the tutorials' 0.10536041 is tf.keras 2's, with epsilon inside the logs; Keras 3 (torch
    # backend, 3.15.1) prints -log(0.9) = 0.10536053
    ("binary_crossentropy", [[0], [1]], [[0.1], [0.9]], 0.10536053),
    ("mean_absolute_error", [[0.], [1.]], [[1.], [0.]], 1.0),
    ("mean_squared_error", [[0.], [1.]], [[1.], [1.]], 0.5),
    ("huber", [[0], [1]], [[0.6], [0.4]], 0.18),
]


@pytest.mark.parametrize("name, y_true, y_pred, expected", TABLE)
def test_design_table(name, y_true, y_pred, expected):
    value = getattr(losses, name)(y_true, y_pred)
    assert isinstance(value, float)
    assert rel(value, expected) <= 1e-6, (name, value, expected)


def test_readme_example_via_package_attribute():
    value = modelc.losses.categorical_crossentropy([[0, 1, 0], [0, 0, 1]],
                                                   [[0.05, 0.9, 0.05], [0.3, 0.2, 0.5]])
    assert rel(value, 0.39925388) <= 1e-6


@pytest.mark.parametrize("alias, name", [("mse", "mean_squared_error"), ("mae", "mean_absolute_error"),
                                         ("huber_loss", "huber"), ("bce", "binary_crossentropy"),
                                         ("cce", "categorical_crossentropy"),
                                         ("scce", "sparse_categorical_crossentropy"),
                                         ("kld", "kl_divergence"),
                                         ("kullback_leibler_divergence", "kl_divergence")])
def test_aliases_are_the_same_loss(alias, name):
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(4), size=5).astype(np.float32)
    if name == "sparse_categorical_crossentropy":
        y = rng.integers(0, 4, size=5)
    else:
        y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=5)]
    assert getattr(losses, alias)(y, p) == getattr(losses, name)(y, p) == losses.get(alias)(y, p)


def test_every_catalog_loss_is_exported():
    from modelc.compiler.catalog import LOSS_ALIASES, LOSSES
    for name in list(LOSSES) + list(LOSS_ALIASES):
        assert callable(getattr(losses, name)), name
    assert set(losses.names()) == set(LOSSES) | set(LOSS_ALIASES)


# ---------------------------------------------------------------- options

def test_categorical_label_smoothing():
    # y' = y (1 - s) + s / C;  loss = mean over rows of -sum y' log(clip(p / sum p, eps, 1 - eps))
    y = np.array([[0, 1, 0], [0, 0, 1]], np.float64)
    p = np.array([[0.05, 0.9, 0.05], [0.3, 0.2, 0.5]], np.float64)
    s = 0.1
    ys = y * (1 - s) + s / 3
    q = np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS)
    expected = float(np.mean(-(ys * np.log(q)).sum(-1)))
    value = losses.categorical_crossentropy(y, p, label_smoothing=s)
    assert rel(value, expected) <= 1e-6
    assert value > losses.categorical_crossentropy(y, p)     # smoothing penalises the confident row


def test_binary_label_smoothing():
    # y' = y (1 - s) + s / 2;  per element -(y' log(q) + (1 - y') log(1 - q)),
    # q = clip(p, eps, 1 - eps) (Keras 3's formula: no epsilon inside the logs)
    y = np.array([[0, 1], [1, 0]], np.float64)
    p = np.array([[0.2, 0.7], [0.6, 0.1]], np.float64)
    s = 0.2
    ys = y * (1 - s) + s / 2
    q = np.clip(p, EPS, 1 - EPS)
    expected = float(np.mean(-(ys * np.log(q) + (1 - ys) * np.log(1 - q))))
    assert rel(losses.binary_crossentropy(y, p, label_smoothing=s), expected) <= 1e-6


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_categorical_from_logits_matches_a_stable_log_softmax():
    # loss = mean over rows of -sum y * (z - max z - log sum exp(z - max z))
    z = np.array([[2.0, -1.0, 0.5], [10.0, 30.0, -5.0], [0.0, 0.0, 0.0]])
    y = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], np.float64)
    expected = float(np.mean(-(y * _log_softmax(z)).sum(-1)))
    assert rel(losses.categorical_crossentropy(y, z, from_logits=True), expected) <= 1e-6


def test_binary_from_logits_matches_the_sigmoid_form():
    # for moderate z: -(y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))), mean over everything
    z = np.array([[-3.0, 0.5], [2.0, -0.25]])
    y = np.array([[0, 1], [1, 1]], np.float64)
    sig = 1 / (1 + np.exp(-z))
    expected = float(np.mean(-(y * np.log(sig) + (1 - y) * np.log(1 - sig))))
    assert rel(losses.binary_crossentropy(y, z, from_logits=True), expected) <= 1e-6


def test_from_logits_is_finite_for_huge_logits():
    value = losses.binary_crossentropy([[1.0], [0.0]], [[-200.0], [200.0]], from_logits=True)
    assert math.isclose(value, 200.0, rel_tol=1e-6)          # log(1 + e^200) ~ 200
    value = losses.categorical_crossentropy([[1, 0]], [[-500.0, 500.0]], from_logits=True)
    assert math.isclose(value, 1000.0, rel_tol=1e-6)


def test_sparse_equals_one_hot():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=16)
    p = rng.dirichlet(np.ones(5), size=16).astype(np.float32)
    onehot = np.eye(5, dtype=np.float32)[labels]
    assert losses.sparse_categorical_crossentropy(labels, p) == losses.categorical_crossentropy(onehot, p)
    z = rng.normal(size=(16, 5)).astype(np.float32)
    assert (losses.sparse_categorical_crossentropy(labels, z, from_logits=True)
            == losses.categorical_crossentropy(onehot, z, from_logits=True))
    # Keras also takes sparse labels as a column
    assert losses.scce(labels[:, None], p) == losses.scce(labels, p)


def test_sparse_by_hand():
    # -mean(log p[label]) = -(log 0.9 + log 0.5) / 2
    value = losses.scce([1, 2], [[0.05, 0.9, 0.05], [0.3, 0.2, 0.5]])
    assert rel(value, -(math.log(0.9) + math.log(0.5)) / 2) <= 1e-6


def test_kl_divergence():
    # sum over classes of y log(y / p), both clipped to [eps, 1]; mean over rows
    y = np.array([[0.2, 0.3, 0.5], [0.0, 1.0, 0.0]])
    p = np.array([[0.1, 0.6, 0.3], [0.25, 0.5, 0.25]])
    yc, pc = np.clip(y, EPS, 1), np.clip(p, EPS, 1)
    expected = float(np.mean((yc * np.log(yc / pc)).sum(-1)))
    assert rel(losses.kl_divergence(y, p), expected) <= 1e-6
    assert abs(losses.kld(p, p)) <= 1e-6                       # KL(p || p) = 0


def test_huber_delta():
    # e = |y - p|: 0.5 e^2 where e <= d, else d e - 0.5 d^2; mean over everything
    y = np.array([[0.0, 2.0], [1.0, -1.0]])
    p = np.array([[0.3, 0.5], [1.0, 1.5]])
    d = 0.5
    e = np.abs(y - p)
    expected = float(np.mean(np.where(e <= d, 0.5 * e * e, d * e - 0.5 * d * d)))
    assert rel(losses.huber(y, p, delta=d), expected) <= 1e-6


def test_computed_in_float32():
    # (0.2 - 0.1)^2 rounds differently in float32 and float64; Keras works in float32
    expected = float((np.float32(0.2) - np.float32(0.1)) ** 2)
    assert losses.mse([[0.1]], [[0.2]]) == expected
    assert expected != (0.2 - 0.1) ** 2


# ---------------------------------------------------------------- exact 0 / 1 predictions

def test_exact_zero_one_predictions_are_clipped_not_infinite():
    # wrong and certain: cross-entropy -log(eps) (probabilities clipped to [1e-7, 1 - 1e-7])
    cce = losses.cce([[0, 1]], [[1.0, 0.0]])
    assert rel(cce, -math.log(float(np.float32(EPS)))) <= 1e-6
    # binary, Keras 3's formula: -log(clip(0)) = -log(1e-7) for the first row and
    # -log(1 - clip(1)) for the second, where clip(1) = 1 - 1e-7 rounded to float32
    # (Keras 3.15.1 prints 16.03024; tf.keras 2 added epsilon inside the logs: 15.36)
    bce = losses.bce([[1.0], [0.0]], [[0.0], [1.0]])
    top = float(np.float32(1 - EPS))
    assert rel(bce, (-math.log(float(np.float32(EPS))) - math.log(1 - top)) / 2) <= 1e-6
    assert rel(bce, 16.03024) <= 1e-6
    # KL: y log(y / clip(p)) = log(1 / 1e-7) plus 1e-7 log(1e-7) for the zero entry
    kld = losses.kld([[0.0, 1.0]], [[1.0, 0.0]])
    assert rel(kld, math.log(1e7) + EPS * math.log(EPS)) <= 1e-6
    # right and certain: (nearly) zero, never negative or NaN
    assert 0 <= losses.cce([[0, 1]], [[0.0, 1.0]]) <= 2e-7
    assert 0 <= losses.bce([[0.0], [1.0]], [[0.0], [1.0]]) <= 2e-7
    for value in (cce, bce, kld):
        assert math.isfinite(value)


# ---------------------------------------------------------------- mistakes

@pytest.mark.parametrize("call, words", [
    (lambda: losses.mse([[0.0, 1.0]], [[0.0, 1.0, 2.0]]), "shape"),
    (lambda: losses.cce([[0, 1, 0], [0, 0, 1]], [[0.5, 0.5], [0.5, 0.5]]), "shape"),
    (lambda: losses.cce([1, 2], [[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]]), "sparse_categorical_crossentropy"),
    (lambda: losses.scce([[0, 1, 0]], [[0.1, 0.2, 0.7]]), "categorical_crossentropy"),
    (lambda: losses.scce([3], [[0.1, 0.2, 0.7]]), "out of range"),
    (lambda: losses.scce([0.5], [[0.1, 0.9]]), "whole number"),
    (lambda: losses.bce([[1.0]], [[0.5]], from_logit=True), "did you mean 'from_logits'"),
    (lambda: losses.bce([[1.0]], [[0.5]], from_logits="yes"), "true or false"),
    (lambda: losses.huber([[1.0]], [[0.5]], delta=-1.0), "delta"),
    (lambda: losses.cce([[1.0, 0.0]], [[0.5, 0.5]], label_smoothing=2.0), "label_smoothing"),
    (lambda: losses.mse(3.0, 2.0), "single number"),
    (lambda: losses.mse([], []), "empty"),
    (lambda: losses.mse([["a"]], [[1.0]]), "numbers"),
    (lambda: losses.get("mean_squared_eror"), "did you mean"),
])
def test_bad_input_is_a_modelc_error(call, words):
    with pytest.raises(ModelcError) as info:
        call()
    assert words in str(info.value)


def test_unknown_attribute_suggests_a_name():
    with pytest.raises(AttributeError, match="categorical_crossentropy"):
        losses.categorical_crosentropy  # noqa: B018


# ---------------------------------------------------------------- Keras 3 on the edges

# Per-sample values of Keras 3.15.1 (torch backend) on edge cases, made by
# tests/keras3_loss_edges.py (its docstring says how to rerun it). Tolerance: rtol 1e-6 is
# about 8 float32 roundings; atol 6e-8 is half a float32 step at 1, what log(x) of an x
# near 1 is known to: Keras's backends differ by that much themselves (torch takes
# log1p(-q) where jax and numpy take log(1 - q); jax's values agree with these within 1.2e-7).
EDGES = np.load(Path(__file__).parent / "data" / "keras3_loss_edges.npz")
EDGE_CASES = [(i, *json.loads(str(EDGES[f"{i}.case"]))) for i in range(len(EDGES.files) // 4)]
EDGE_RTOL, EDGE_ATOL = 1e-6, 6e-8


def _edge_id(case):
    i, name, options = case
    return f"{i}-{name}" + "".join(f"-{k}={v}" for k, v in options.items())


def _cpu_values(name: str, options: dict, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The cpu target's kernel for this loss (the one its training loop calls) on y and p."""
    from modelc.compiler.codegen.cpu import kernels_module
    from modelc.compiler.codegen.cpu_formulas import kernel_call
    from modelc.compiler.emitter import Emitter
    from modelc.compiler.ir import F32, I64, Graph, Value

    inputs = [Value("y", I64 if y.dtype.kind == "i" else F32, y.shape, "input"), Value("p", F32, p.shape, "input")]
    call = kernel_call(Emitter(Graph("edge")).emit_op(name, inputs, options))
    out = np.zeros(len(p), np.float32)
    labels = y.astype(np.int64) if y.dtype.kind == "i" else y
    getattr(kernels_module(), call.kernel)(labels, p, out, len(p), p.shape[1], *call.floats)
    return out


@pytest.mark.parametrize("case", EDGE_CASES, ids=_edge_id)
def test_reference_matches_keras3_on_the_edges(case):
    i, name, options = case
    with np.errstate(invalid="ignore", divide="ignore"):     # Keras's NaN cases (0/0, log of a negative)
        got = PRIMITIVES[name].impl(EDGES[f"{i}.y"], EDGES[f"{i}.p"], **options)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, EDGES[f"{i}.keras"], rtol=EDGE_RTOL, atol=EDGE_ATOL)


def test_cpu_target_matches_keras3_on_the_edges():
    for i, name, options in EDGE_CASES:
        got = _cpu_values(name, options, EDGES[f"{i}.y"], EDGES[f"{i}.p"])
        np.testing.assert_allclose(got, EDGES[f"{i}.keras"], rtol=EDGE_RTOL, atol=EDGE_ATOL,
                                   err_msg=_edge_id((i, name, options)))


def test_every_loss_has_keras3_edge_values():
    from modelc.compiler.catalog import LOSSES
    forms = {(name, bool(options.get("from_logits"))) for _, name, options in EDGE_CASES}
    assert forms == {(d.name, logits) for d in LOSSES.values()
                     for logits in ((False, True) if d.logits_rule else (False,))}
