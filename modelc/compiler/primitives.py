"""The primitives: for each, its shape rule, NumPy reference implementation and
gradient rule (VJP), in one place.

`infer(in_types, attrs)` takes `(dtype, shape)` pairs and returns the output
types, raising `ShapeError` (a plain message; the builder adds the spec
location). `impl(*arrays, **attrs)` is the ground truth every target is tested
against; it is dtype-generic so gradients can be checked in float64. `vjp(emit,
op, grads)` returns one gradient Value (or None) per input, emitting new ops
through `emit(prim, *inputs, **attrs) -> Value`.

Losses, metrics and optimizer updates are not written here: each is a formula
of the catalog (`catalog.LOSSES`, `METRICS`, `OPTIMIZERS`), registered below
as a primitive whose reference is that formula evaluated by `formulas`. A loss
gives per-sample values; a separate `mean` op averages them over the batch.
"""
from __future__ import annotations

import math

import numpy as np

from modelc.compiler import elementwise, expr, formulas
from modelc.compiler.catalog import LOSSES, METRICS, OPTIMIZERS
from modelc.compiler.ir import F32, I64
from modelc.compiler.registry import PRIMITIVES, Primitive, ShapeError, primitive
from modelc.compiler.registry import fmt_shape as _fmt
from modelc.compiler.registry import require_float as _float
from modelc.compiler import image_primitives  # noqa: F401  (registers convolution, pooling, normalization)

__all__ = ["PRIMITIVES", "Primitive", "ShapeError", "dropout_hash", "dropout_uniform"]


def _dim_eq(a, b) -> bool:
    return a == b


def _scalar():
    return [(F32, ())]



# ---------------------------------------------------------------- linear algebra

def _matmul_infer(types, attrs):
    (da, a), (db, b) = types
    if len(a) != 2 or len(b) != 2:
        raise ShapeError(f"matmul needs 2-D operands, got {_fmt(a)} and {_fmt(b)}")
    m, k = (a[1], a[0]) if attrs.get("ta") else a
    k2, n = (b[1], b[0]) if attrs.get("tb") else b
    if not _dim_eq(k, k2):
        raise ShapeError(f"matmul: inner dimensions differ ({_fmt(a)} @ {_fmt(b)})")
    return [(F32, (m, n))]


def _matmul_vjp(emit, op, grads):
    (g,) = grads
    a, b = op.inputs
    ta, tb = op.attrs.get("ta", False), op.attrs.get("tb", False)
    da = emit("matmul", b, g, ta=tb, tb=True) if ta else emit("matmul", g, b, ta=False, tb=not tb)
    db = emit("matmul", g, a, ta=True, tb=ta) if tb else emit("matmul", a, g, ta=not ta, tb=False)
    return [da, db]


@primitive("matmul", _matmul_infer, _matmul_vjp)
def matmul(a, b, ta=False, tb=False):
    """a @ b with either operand transposed, as the backward pass needs."""
    return (a.T if ta else a) @ (b.T if tb else b)


def _bias_add_infer(types, attrs):
    (dx, x), (db, b) = types
    if len(b) != 1 or x[-1] != b[0]:
        raise ShapeError(f"bias of shape {_fmt(b)} does not fit {_fmt(x)}")
    return [(F32, x)]


@primitive("bias_add", _bias_add_infer,
           lambda emit, op, grads: [grads[0], emit("sum_to_last", grads[0])])
def bias_add(x, b):
    return x + b


def _sum_to_last_infer(types, attrs):
    (d, s), = types
    return [(F32, (s[-1],))]


@primitive("sum_to_last", _sum_to_last_infer)
def sum_to_last(x):
    """Sum over every axis but the last: the gradient of a broadcast bias."""
    return x.reshape(-1, x.shape[-1]).sum(axis=0)


# ---------------------------------------------------------------- structure

def _reshape_infer(types, attrs):
    (d, s), = types
    size = math.prod(s[1:])         # exact: an int64 product of large dimensions wraps around
    target = tuple(attrs["shape"])
    if math.prod(target) != size:
        raise ShapeError(f"cannot reshape {_fmt(s[1:])} ({size} values) to {_fmt(target)}")
    return [(d, (s[0],) + target)]


@primitive("reshape", _reshape_infer,
           lambda emit, op, grads: [emit("reshape", grads[0], shape=tuple(op.inputs[0].shape[1:]))])
def reshape(x, shape):
    return x.reshape((x.shape[0],) + tuple(shape))


def _add_infer(types, attrs):
    first = types[0][1]
    for d, s in types[1:]:
        if s != first:
            raise ShapeError(f"add needs inputs of one shape, got {_fmt(first)} and {_fmt(s)}")
    return [(F32, first)]


@primitive("add", _add_infer, lambda emit, op, grads: [grads[0]] * len(op.inputs))
def add(*xs):
    out = xs[0].copy()
    for x in xs[1:]:
        out += x
    return out


def _concat_infer(types, attrs):
    axis = attrs["axis"]
    shapes = [s for _, s in types]
    rank = len(shapes[0])
    for s in shapes[1:]:
        if len(s) != rank or any(a != b for i, (a, b) in enumerate(zip(s, shapes[0])) if i != axis):
            raise ShapeError(f"concat on axis {axis} needs matching other dimensions, got "
                             + " and ".join(_fmt(x) for x in shapes))
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return [(F32, tuple(out))]


def _concat_vjp(emit, op, grads):
    axis, start, out = op.attrs["axis"], 0, []
    for x in op.inputs:
        stop = start + x.shape[axis]
        out.append(emit("slice", grads[0], axis=axis, start=start, stop=stop))
        start = stop
    return out


@primitive("concat", _concat_infer, _concat_vjp)
def concat(*xs, axis):
    return np.concatenate(xs, axis=axis)


def _slice_infer(types, attrs):
    (d, s), = types
    out = list(s)
    out[attrs["axis"]] = attrs["stop"] - attrs["start"]
    return [(d, tuple(out))]


@primitive("slice", _slice_infer)
def slice_(x, axis, start, stop):
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return np.ascontiguousarray(x[tuple(index)])


@primitive("mul", lambda types, attrs: [types[0]],
           lambda emit, op, grads: [emit("mul", grads[0], op.inputs[1]), emit("mul", grads[0], op.inputs[0])])
def mul(a, b):
    return a * b


# ---------------------------------------------------------------- dropout

_MASK32 = 0xFFFFFFFF


def dropout_hash(seed, step, i):
    """A uniform number in [0, 1) from a 32-bit hash of (seed, step, index).
    Plain integer Python: the cpu and cuda targets compile this same function,
    so dropout masks agree across targets bit for bit. Products may wrap in
    64-bit arithmetic; only their low 32 bits are kept, which wrapping preserves."""
    h = ((seed & 0xFFFFFFFF) * 0x9E3779B1 + (step & 0xFFFFFFFF) * 0x85EBCA77 + i) & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x7FEB352D) & 0xFFFFFFFF
    h ^= h >> 15
    h = (h * 0x846CA68B) & 0xFFFFFFFF
    h ^= h >> 16
    return h * (1.0 / 4294967296.0)


def dropout_uniform(seed: int, step, n: int, first: int = 0) -> np.ndarray:
    """`dropout_hash` for indices first..first+n-1 at once (the same arithmetic on uint64 arrays)."""
    mask = np.uint64(_MASK32)
    base = ((int(seed) & _MASK32) * 0x9E3779B1 + (int(step) & _MASK32) * 0x85EBCA77 + int(first)) & _MASK32
    h = (np.uint64(base) + np.arange(n, dtype=np.uint64)) & mask
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x7FEB352D)) & mask
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x846CA68B)) & mask
    h ^= h >> np.uint64(16)
    return h.astype(np.float64) * (1.0 / 4294967296.0)


def _dropout_infer(types, attrs):
    x = types[0]
    _float(x, "dropout input")
    return [x, x]


@primitive("dropout", _dropout_infer,
           lambda emit, op, grads: [emit("mul", grads[0], op.outputs[1]), None], by_row=True)
def dropout(x, step, rate, seed, first_row=0):
    """Training-mode dropout: returns the output and the scaled keep-mask. An element's number
    in the hash counts from the global batch's first row: row i of a share that starts at
    global row `first_row` draws what row first_row + i of the whole batch does."""
    base = int(first_row) * (x.size // len(x) if len(x) else 0)
    keep = dropout_uniform(seed, step, x.size, base).reshape(x.shape) >= rate
    mask = keep.astype(x.dtype) / x.dtype.type(1.0 - rate)
    return x * mask, mask


# ---------------------------------------------------------------- activations

def _act_infer(types, attrs):
    _float(types[0], "activation input")
    if elementwise.resolve(attrs["fn"]) is None:
        raise ShapeError(f"unknown activation {attrs['fn']}")
    return [types[0]]


def _act_env(x, attrs, y=None):
    fn = elementwise.ACTIVATIONS[attrs["fn"]]
    env = {"x": x, **{k: attrs.get(k, v) for k, v in fn.params.items()}}
    if y is not None:
        env["y"] = y
    return fn, env


@primitive("act", _act_infer,
           lambda emit, op, grads: [emit("act_grad", grads[0], op.inputs[0], op.out, **op.attrs)])
def act(x, fn, **params):
    """An elementwise activation from `elementwise.ACTIVATIONS`."""
    f, env = _act_env(x, {"fn": fn, **params})
    return expr.evaluate(f.forward, env)


@primitive("act_grad", lambda types, attrs: [types[0]])
def act_grad(g, x, y, fn, **params):
    f, env = _act_env(x, {"fn": fn, **params}, y)
    return g * expr.evaluate(f.derivative, env)


def _rowwise_infer(types, attrs):
    _float(types[0], "softmax input")
    return [types[0]]


@primitive("softmax", _rowwise_infer,
           lambda emit, op, grads: [emit("softmax_grad", grads[0], op.out, **op.attrs)])
def softmax(x, temperature=1.0):
    z = x / x.dtype.type(temperature)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@primitive("softmax_grad", lambda types, attrs: [types[0]])
def softmax_grad(g, y, temperature=1.0):
    return y * (g - (g * y).sum(axis=-1, keepdims=True)) / y.dtype.type(temperature)


@primitive("log_softmax", _rowwise_infer,
           lambda emit, op, grads: [emit("log_softmax_grad", grads[0], op.out, **op.attrs)])
def log_softmax(x, temperature=1.0):
    z = x / x.dtype.type(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@primitive("log_softmax_grad", lambda types, attrs: [types[0]])
def log_softmax_grad(g, y, temperature=1.0):
    return (g - np.exp(y) * g.sum(axis=-1, keepdims=True)) / y.dtype.type(temperature)


# ---------------------------------------------------------------- batch mean

def _mean_infer(types, attrs):
    (d, s), = types
    if len(s) != 1:
        raise ShapeError(f"mean expects per-sample values, got {_fmt(s)}")
    return _scalar()


@primitive("mean", _mean_infer,
           lambda emit, op, grads: [emit("mean_grad", grads[0], op.inputs[0])])
def mean(x):
    """The batch mean of per-sample values (Keras's sum_over_batch_size)."""
    return np.asarray(x.mean(), dtype=x.dtype)


@primitive("mean_grad", lambda types, attrs: [types[1]])
def mean_grad(g, x):
    return np.full(x.shape, g / x.shape[0], dtype=x.dtype)


# ---------------------------------------------------------------- losses and metrics
# Each is a row rule of the catalog: `<name>(y_true, y_pred)` gives per-sample values
# (B,), and a loss's gradient primitive `<name>_grad(y_true, y_pred, g)` takes the
# per-sample gradient g. Integer labels (i64 [B]) are seen as one-hot rows.

def _row_infer(types, attrs):
    (yd, ys), (pd, ps) = types[0], types[1]
    if yd == I64:
        if len(ys) != 1:
            raise ShapeError(f"integer labels must have shape [B], got {_fmt(ys)}")
        if len(ps) != 2:
            raise ShapeError(f"integer labels need [batch, classes] predictions, got {_fmt(ps)}")
        return [(F32, (ps[0],))]
    if ps != ys:
        raise ShapeError(f"the target has shape {_fmt(ys)} but the prediction has shape {_fmt(ps)}")
    return [(F32, (ps[0],))]


def _categorical_infer(types, attrs):
    if len(types[1][1]) != 2:
        raise ShapeError(f"categorical losses need [batch, classes] predictions, got {_fmt(types[1][1])}")
    return _row_infer(types, attrs)


def _sparse(y) -> bool:
    return y.dtype.kind in "iu"


def _defaults(params) -> dict:
    return {p.name: p.default for p in params}


def _register_row(name: str, rule_for, params=(), infer=_row_infer, grad: bool = False) -> None:
    """`name` computes the per-sample values of `rule_for(attrs)`; with `grad`, also the
    primitive `name_grad` and the gradient rule that emits it. Options not given take
    the catalog's defaults (`params`)."""
    defaults = _defaults(params)

    def impl(y, p, **attrs):
        attrs = {**defaults, **attrs}
        return formulas.row_value(rule_for(attrs), y, p, attrs, _sparse(y))

    def grad_impl(y, p, g, **attrs):
        attrs = {**defaults, **attrs}
        return formulas.row_grad(rule_for(attrs), y, p, g, attrs, _sparse(y))


    def vjp(emit, op, grads):
        return [None, emit(name + "_grad", op.inputs[0], op.inputs[1], grads[0], **op.attrs)]

    PRIMITIVES[name] = Primitive(name, infer, impl, vjp if grad else None, f"row rule {name}",
                                 kind="row", formula=rule_for, defaults=defaults)
    if grad:
        PRIMITIVES[name + "_grad"] = Primitive(name + "_grad", lambda types, attrs: [types[1]], grad_impl,
                                               doc=f"gradient of {name}", kind="row_grad", formula=rule_for,
                                               defaults=defaults)


for _loss in LOSSES.values():
    _register_row(_loss.name, _loss.rule_for, _loss.params,
                  _categorical_infer if _loss.kind in ("categorical", "sparse") else _row_infer, grad=True)
for _metric in METRICS.values():
    for _rule in ((_metric.rule,) if _metric.rule else ()) + (_metric.ratio or ()):
        _register_row(_rule.name, lambda attrs, rule=_rule: rule, _metric.params)


# ---------------------------------------------------------------- optimizers
# Update ops write the parameter and its state in place and return nothing.
# Inputs: param, grad, *state, step (i64 scalar: updates done so far), and for norm
# clipping the sum of squares of the gradient(s) the norm is taken over.

def _update_infer(types, attrs):
    (pd, ps), (gd, gs) = types[0], types[1]
    if ps != gs:
        raise ShapeError(f"gradient {_fmt(gs)} does not match parameter {_fmt(ps)}")
    return []


def _register_update(rule: formulas.UpdateRule, params) -> None:
    defaults = _defaults(params)

    def impl(w, g, *rest, **options):
        options = {**defaults, **options}
        states, step = rest[:len(rule.state)], rest[len(rule.state)]
        arrays = {"w": w, "g": g, **dict(zip(rule.state, states))}
        if len(rest) > len(rule.state) + 1:
            arrays["sumsq"] = rest[-1]
        formulas.apply_update(rule, arrays, int(step), options)
        return ()

    PRIMITIVES[rule.name] = Primitive(rule.name, _update_infer, impl, doc=f"update rule {rule.name}",
                                      kind="update", formula=lambda attrs: rule, defaults=defaults)


for _optimizer in OPTIMIZERS.values():
    _register_update(_optimizer.rule, _optimizer.params)


@primitive("sum_squares", lambda types, attrs: [(F32, ())])
def sum_squares(x):
    """The sum of the squares of every element: the squared norm that gradient clipping takes."""
    return np.asarray((x * x).sum(), dtype=x.dtype)


@primitive("constant", lambda types, attrs: [(F32, ())])
def constant(value):
    """A float32 scalar: the seed of the backward pass."""
    return np.asarray(value, dtype=np.float32)
