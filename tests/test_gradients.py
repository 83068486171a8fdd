"""Every gradient rule against central finite differences, in float64.

Each differentiable primitive needs an example below; a primitive added to the
registry without one fails `test_every_vjp_has_an_example`. Activations and the
catalog's losses are enumerated, so a new one is checked with no edit here.
"""
from __future__ import annotations

import numpy as np
import pytest

from modelc.compiler import elementwise
from modelc.compiler.codegen.numpy_target import run_graph
from modelc.compiler.emitter import Emitter
from modelc.compiler.ir import F32, I64, Graph, Op, Value
from modelc.compiler.image_primitives import same_pads
from modelc.compiler.primitives import PRIMITIVES
from tests.formula_cases import loss_cases

B = 3


def _rand(rng, shape, low=-1.5, high=1.5):
    return rng.uniform(low, high, shape)


def _probs(rng, shape):
    p = rng.uniform(0.05, 1.0, shape)
    return p / p.sum(axis=-1, keepdims=True)


def _binary_targets(rng, shape):
    return rng.integers(0, 2, shape).astype(np.float64)


def _onehot(rng, shape):
    return np.eye(shape[-1])[rng.integers(0, shape[-1], shape[0])]


# name -> list of (inputs: [(dtype, shape, maker)], attrs, differentiable input indices)
def examples():
    rng = np.random.default_rng(0)
    act = []
    for name, fn in elementwise.ACTIVATIONS.items():
        # keep inputs away from kinks (relu at 0) where finite differences are undefined
        x = rng.uniform(0.1, 1.5, (B, 4)) * rng.choice([-1, 1], (B, 4))
        act.append(("act", [(F32, (B, 4), x)], {"fn": name, **fn.params}, [0]))
    cases = act + [
        ("matmul", [(F32, (B, 4), _rand(rng, (B, 4))), (F32, (4, 5), _rand(rng, (4, 5)))], {}, [0, 1]),
        ("matmul", [(F32, (4, B), _rand(rng, (4, B))), (F32, (4, 5), _rand(rng, (4, 5)))], {"ta": True}, [0, 1]),
        ("matmul", [(F32, (B, 4), _rand(rng, (B, 4))), (F32, (5, 4), _rand(rng, (5, 4)))], {"tb": True}, [0, 1]),
        ("matmul", [(F32, (4, B), _rand(rng, (4, B))), (F32, (5, 4), _rand(rng, (5, 4)))],
         {"ta": True, "tb": True}, [0, 1]),
        ("bias_add", [(F32, (B, 4), _rand(rng, (B, 4))), (F32, (4,), _rand(rng, (4,)))], {}, [0, 1]),
        ("reshape", [(F32, (B, 2, 3), _rand(rng, (B, 2, 3)))], {"shape": (6,)}, [0]),
        ("add", [(F32, (B, 4), _rand(rng, (B, 4))), (F32, (B, 4), _rand(rng, (B, 4)))], {}, [0, 1]),
        ("concat", [(F32, (B, 2), _rand(rng, (B, 2))), (F32, (B, 3), _rand(rng, (B, 3)))], {"axis": 1}, [0, 1]),
        ("mul", [(F32, (B, 4), _rand(rng, (B, 4))), (F32, (B, 4), _rand(rng, (B, 4)))], {}, [0, 1]),
        ("dropout", [(F32, (B, 6), _rand(rng, (B, 6))), (I64, (), np.int64(3))], {"rate": 0.4, "seed": 7}, [0]),
        ("softmax", [(F32, (B, 5), _rand(rng, (B, 5)))], {"temperature": 0.6}, [0]),
        ("log_softmax", [(F32, (B, 5), _rand(rng, (B, 5)))], {"temperature": 1.7}, [0]),
        ("mean", [(F32, (B,), _rand(rng, (B,)))], {}, [0]),
        ("scale_last", [(F32, (B, 3, 4), _rand(rng, (B, 3, 4))), (F32, (4,), _rand(rng, (4,)))], {}, [0, 1]),
        ("batch_normalize", [(F32, (B, 3, 3, 2), _rand(rng, (B, 3, 3, 2)))], {"epsilon": 0.001}, [0]),
        ("layer_normalize", [(F32, (B, 2, 5), _rand(rng, (B, 2, 5)))], {"epsilon": 0.001}, [0]),
    ] + image_cases(rng)
    # every loss of the catalog, each variant (from_logits, options), from the loss's kind
    return cases + [(name, inputs, attrs, [1]) for name, inputs, attrs in loss_cases()]


def _geometry(hw, window, strides, padding):
    pads = (same_pads(hw[0], window[0], strides[0]) + same_pads(hw[1], window[1], strides[1])
            if padding == "same" else (0, 0, 0, 0))
    return {"strides": strides, "pads": pads}


def image_cases(rng):
    """Strides, same padding with odd and even kernels (the odd pad after), ragged and
    overlapping pooling windows. Inputs are continuous: no ties in max pooling."""
    convs = [((5, 5, 2), (3, 3), (1, 1), "same"), ((6, 5, 2), (2, 2), (2, 2), "same"),
             ((7, 6, 1), (3, 2), (2, 3), "valid"), ((4, 4, 2), (2, 2), (1, 1), "same")]
    pools = [((5, 5, 2), (2, 2), (2, 2), "valid"), ((5, 5, 2), (2, 2), (2, 2), "same"),
             ((7, 6, 1), (3, 3), (2, 2), "valid"), ((4, 5, 1), (3, 2), (1, 2), "same")]
    cases = []
    for (h, w, c), window, strides, padding in convs:
        kernel = (*window, c, 3)
        cases.append(("conv2d", [(F32, (2, h, w, c), _rand(rng, (2, h, w, c))), (F32, kernel, _rand(rng, kernel))],
                      _geometry((h, w), window, strides, padding), [0, 1]))
    for prim in ("max_pool", "avg_pool"):
        for (h, w, c), window, strides, padding in pools:
            cases.append((prim, [(F32, (2, h, w, c), _rand(rng, (2, h, w, c)))],
                          dict(_geometry((h, w), window, strides, padding), window=window), [0]))
    return cases


CASES = examples()


def _ids():
    return [f"{name}-{attrs.get('fn', '')}{'-'.join(f'{k}' for k in attrs if k != 'fn')}-{i}"
            for i, (name, _, attrs, _) in enumerate(CASES)]


def _graph(prim, inputs, attrs):
    graph = Graph("check")
    values = [Value(f"in{i}", dtype, shape, "input") for i, (dtype, shape, _) in enumerate(inputs)]
    graph.inputs = values
    emit = Emitter(graph)
    op = emit.emit_op(prim, values, attrs)
    return graph, emit, values, op


def _forward(prim, arrays, attrs):
    out = PRIMITIVES[prim].impl(*arrays, **attrs)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("case", CASES, ids=_ids())
def test_vjp_matches_finite_differences(case):
    prim, inputs, attrs, diff = case
    arrays = [np.array(a, dtype=np.float64 if d == F32 else np.int64) for d, _, a in inputs]
    graph, emit, values, op = _graph(prim, inputs, attrs)
    rng = np.random.default_rng(1)
    out0 = np.asarray(_forward(prim, arrays, attrs))
    cotangent = rng.normal(size=out0.shape)
    seed = Value("cotangent", F32, op.outputs[0].shape, "input")
    graph.inputs.append(seed)
    grads = PRIMITIVES[prim].vjp(emit, op, [seed] + [None] * (len(op.outputs) - 1))
    env = {v.id: a for v, a in zip(values, arrays)}
    env[seed.id] = cotangent
    graph.outputs = {f"d{i}": g for i, g in enumerate(grads) if i in diff}
    results = run_graph(graph, env)
    h = 1e-6
    for i in diff:
        numeric = np.zeros_like(arrays[i])
        flat = arrays[i].reshape(-1)
        for k in range(flat.size):
            saved = flat[k]
            flat[k] = saved + h
            plus = np.sum(cotangent * _forward(prim, arrays, attrs))
            flat[k] = saved - h
            minus = np.sum(cotangent * _forward(prim, arrays, attrs))
            flat[k] = saved
            numeric.reshape(-1)[k] = (plus - minus) / (2 * h)
        analytic = results[f"d{i}"]
        assert analytic.shape == arrays[i].shape
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7,
                                   err_msg=f"{prim} gradient for input {i}")


def test_every_vjp_has_an_example():
    covered = {name for name, *_ in CASES}
    with_vjp = {name for name, p in PRIMITIVES.items() if p.vjp is not None}
    assert with_vjp - covered == set()


def test_every_activation_is_checked():
    checked = {attrs["fn"] for name, _, attrs, _ in CASES if name == "act"}
    assert checked == set(elementwise.ACTIVATIONS)
