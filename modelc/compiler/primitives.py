"""The primitives: for each, its shape rule, NumPy reference implementation and
gradient rule (VJP), in one place.

`infer(in_types, attrs)` takes `(dtype, shape)` pairs and returns the output
types, raising `ShapeError` (a plain message; the builder adds the spec
location). `impl(*arrays, **attrs)` is the ground truth every target is tested
against; it is dtype-generic so gradients can be checked in float64. `vjp(emit,
op, grads)` returns one gradient Value (or None) per input, emitting new ops
through `emit(prim, *inputs, **attrs) -> Value`.

Keras semantics for losses: probabilities clipped to [1e-7, 1 - 1e-7],
categorical cross-entropy renormalises its input, the per-sample loss is the
mean over the last axis (the sum over classes for cross-entropies), and a
separate `mean` op averages over the batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from modelc.compiler import elementwise
from modelc.compiler.ir import F32, I64

EPSILON = 1e-7


class ShapeError(Exception):
    """Inputs of the wrong shape or type for a primitive (reported at the spec line)."""


@dataclass
class Primitive:
    name: str
    infer: Callable[[list, dict], list]
    impl: Callable[..., Any]
    vjp: Callable | None = None
    differentiable: tuple[int, ...] = ()     # which inputs carry gradients
    doc: str = ""


PRIMITIVES: dict[str, Primitive] = {}


def primitive(name: str, infer, vjp=None, differentiable=(), doc=""):
    def register(impl):
        PRIMITIVES[name] = Primitive(name, infer, impl, vjp, tuple(differentiable), doc or (impl.__doc__ or ""))
        return impl
    return register


# ---------------------------------------------------------------- shape helpers

def _dim_eq(a, b) -> bool:
    return a == b


def _float(t, what):
    if t[0] != F32:
        raise ShapeError(f"{what} must be float, got {t[0]}")


def _same(t):
    return [t]


def _scalar():
    return [(F32, ())]


def _per_sample(types, attrs):
    (yd, ys), (pd, ps) = types[0], types[1]
    if ps != ys:
        raise ShapeError(f"the target has shape {_fmt(ys)} but the prediction has shape {_fmt(ps)}")
    return [(F32, (ps[0],))]


def _fmt(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _batch_rows(x):
    """Per-sample reduction axes: everything but the batch axis."""
    return tuple(range(1, x.ndim))


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


@primitive("matmul", _matmul_infer, _matmul_vjp, (0, 1))
def matmul(a, b, ta=False, tb=False):
    """a @ b with either operand transposed, as the backward pass needs."""
    return (a.T if ta else a) @ (b.T if tb else b)


def _bias_add_infer(types, attrs):
    (dx, x), (db, b) = types
    if len(b) != 1 or x[-1] != b[0]:
        raise ShapeError(f"bias of shape {_fmt(b)} does not fit {_fmt(x)}")
    return [(F32, x)]


@primitive("bias_add", _bias_add_infer,
           lambda emit, op, grads: [grads[0], emit("sum_to_last", grads[0])], (0, 1))
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
    size = int(np.prod(s[1:], dtype=np.int64))
    target = tuple(attrs["shape"])
    if int(np.prod(target, dtype=np.int64)) != size:
        raise ShapeError(f"cannot reshape {_fmt(s[1:])} ({size} values) to {_fmt(target)}")
    return [(d, (s[0],) + target)]


@primitive("reshape", _reshape_infer,
           lambda emit, op, grads: [emit("reshape", grads[0], shape=tuple(op.inputs[0].shape[1:]))], (0,))
def reshape(x, shape):
    return x.reshape((x.shape[0],) + tuple(shape))


def _add_infer(types, attrs):
    first = types[0][1]
    for d, s in types[1:]:
        if s != first:
            raise ShapeError(f"add needs inputs of one shape, got {_fmt(first)} and {_fmt(s)}")
    return [(F32, first)]


@primitive("add", _add_infer, lambda emit, op, grads: [grads[0]] * len(op.inputs), ())
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
           lambda emit, op, grads: [emit("mul", grads[0], op.inputs[1]), emit("mul", grads[0], op.inputs[0])],
           (0, 1))
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


def dropout_uniform(seed: int, step, n: int) -> np.ndarray:
    """`dropout_hash` for indices 0..n-1 at once (the same arithmetic on uint64 arrays)."""
    mask = np.uint64(_MASK32)
    base = ((int(seed) & _MASK32) * 0x9E3779B1 + (int(step) & _MASK32) * 0x85EBCA77) & _MASK32
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
           lambda emit, op, grads: [emit("mul", grads[0], op.outputs[1]), None], (0,))
def dropout(x, step, rate, seed):
    """Training-mode dropout: returns the output and the scaled keep-mask."""
    keep = dropout_uniform(seed, step, x.size).reshape(x.shape) >= rate
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
           lambda emit, op, grads: [emit("act_grad", grads[0], op.inputs[0], op.out, **op.attrs)], (0,))
def act(x, fn, **params):
    """An elementwise activation from `elementwise.ACTIVATIONS`."""
    f, env = _act_env(x, {"fn": fn, **params})
    return elementwise.evaluate(f.forward, env)


@primitive("act_grad", lambda types, attrs: [types[0]])
def act_grad(g, x, y, fn, **params):
    f, env = _act_env(x, {"fn": fn, **params}, y)
    return g * elementwise.evaluate(f.derivative, env)


def _rowwise_infer(types, attrs):
    _float(types[0], "softmax input")
    return [types[0]]


@primitive("softmax", _rowwise_infer,
           lambda emit, op, grads: [emit("softmax_grad", grads[0], op.out, **op.attrs)], (0,))
def softmax(x, temperature=1.0):
    z = x / x.dtype.type(temperature)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@primitive("softmax_grad", lambda types, attrs: [types[0]])
def softmax_grad(g, y, temperature=1.0):
    return y * (g - (g * y).sum(axis=-1, keepdims=True)) / y.dtype.type(temperature)


@primitive("log_softmax", _rowwise_infer,
           lambda emit, op, grads: [emit("log_softmax_grad", grads[0], op.out, **op.attrs)], (0,))
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
           lambda emit, op, grads: [emit("mean_grad", grads[0], op.inputs[0])], (0,))
def mean(x):
    """The batch mean of per-sample values (Keras's sum_over_batch_size)."""
    return np.asarray(x.mean(), dtype=x.dtype)


@primitive("mean_grad", lambda types, attrs: [types[1]])
def mean_grad(g, x):
    return np.full(x.shape, g / x.shape[0], dtype=x.dtype)


# ---------------------------------------------------------------- losses
# Each takes (y_true, y_pred) and returns per-sample losses (B,). Its gradient
# primitive `<name>_grad(y_true, y_pred, g)` takes the per-sample gradient g.

def _loss(name, infer=_per_sample):
    grad_name = name + "_grad"

    def vjp(emit, op, grads):
        return [None, emit(grad_name, op.inputs[0], op.inputs[1], grads[0], **op.attrs)]

    def register(pair):
        forward, backward = pair
        PRIMITIVES[name] = Primitive(name, infer, forward, vjp, (1,), forward.__doc__ or "")
        PRIMITIVES[grad_name] = Primitive(grad_name, lambda types, attrs: [types[1]], backward)
        return pair
    return register


def _g(g, p):
    """Per-sample gradient broadcast over a sample's other axes."""
    return g.reshape((-1,) + (1,) * (p.ndim - 1))


def _count(p):
    return p.dtype.type(np.prod(p.shape[1:], dtype=np.int64))


def _mse(y, p):
    """mean((y - p)^2) over each sample."""
    return ((p - y) ** 2).mean(axis=_batch_rows(p))


def _mse_grad(y, p, g):
    return _g(g, p) * 2 * (p - y) / _count(p)


_loss("mean_squared_error")((_mse, _mse_grad))


def _mae(y, p):
    """mean(|y - p|) over each sample."""
    return np.abs(p - y).mean(axis=_batch_rows(p))


def _mae_grad(y, p, g):
    return _g(g, p) * np.sign(p - y) / _count(p)


_loss("mean_absolute_error")((_mae, _mae_grad))


def _huber(y, p, delta=1.0):
    """Quadratic within `delta`, linear beyond, as Keras's Huber."""
    e = np.abs(p - y)
    d = p.dtype.type(delta)
    return np.where(e <= d, 0.5 * e * e, d * e - 0.5 * d * d).mean(axis=_batch_rows(p))


def _huber_grad(y, p, g, delta=1.0):
    e = p - y
    d = p.dtype.type(delta)
    return _g(g, p) * np.clip(e, -d, d) / _count(p)


_loss("huber")((_huber, _huber_grad))


def _smooth_binary(y, label_smoothing):
    return y * (1 - label_smoothing) + 0.5 * label_smoothing if label_smoothing else y


def _sigmoid(z):
    return elementwise.FUNCTIONS["sigmoid"](z)


def _bce(y, p, from_logits=False, label_smoothing=0.0):
    """Keras binary cross-entropy: clipped probabilities, or a stable form on logits."""
    y = _smooth_binary(y, label_smoothing)
    if from_logits:
        per = np.maximum(p, 0) - p * y + np.log1p(np.exp(-np.abs(p)))
    else:
        # tf.keras adds epsilon inside the logs after clipping; the reference
        # values (DESIGN.md: 0.10536041 for 0.9) need it to the printed digits.
        q = np.clip(p, EPSILON, 1 - EPSILON)
        per = -(y * np.log(q + EPSILON) + (1 - y) * np.log(1 - q + EPSILON))
    return per.mean(axis=_batch_rows(p))


def _bce_grad(y, p, g, from_logits=False, label_smoothing=0.0):
    y = _smooth_binary(y, label_smoothing)
    if from_logits:
        d = _sigmoid(p) - y
    else:
        inside = (p > EPSILON) & (p < 1 - EPSILON)
        q = np.clip(p, EPSILON, 1 - EPSILON)
        d = np.where(inside, (1 - y) / (1 - q + EPSILON) - y / (q + EPSILON), 0)
    return (_g(g, p) * d / _count(p)).astype(p.dtype)


_loss("binary_crossentropy")((_bce, _bce_grad))


def _smooth_categorical(y, label_smoothing):
    return y * (1 - label_smoothing) + label_smoothing / y.shape[-1] if label_smoothing else y


def _cce(y, p, from_logits=False, label_smoothing=0.0, temperature=1.0):
    """Keras categorical cross-entropy: renormalised, clipped probabilities, or
    log-softmax of logits (divided by `temperature`, for a fused softmax)."""
    y = _smooth_categorical(y, label_smoothing)
    if from_logits:
        return -(y * log_softmax(p, temperature)).sum(axis=-1)
    q = np.clip(p / p.sum(axis=-1, keepdims=True), EPSILON, 1 - EPSILON)
    return -(y * np.log(q)).sum(axis=-1)


def _cce_grad(y, p, g, from_logits=False, label_smoothing=0.0, temperature=1.0):
    y = _smooth_categorical(y, label_smoothing)
    g = g[:, None]
    if from_logits:
        return g * (softmax(p, temperature) * y.sum(axis=-1, keepdims=True) - y) / p.dtype.type(temperature)
    s = p.sum(axis=-1, keepdims=True)
    q = p / s
    inside = (q > EPSILON) & (q < 1 - EPSILON)
    dq = np.where(inside, -y / np.clip(q, EPSILON, 1), 0)
    return g * (dq - (dq * q).sum(axis=-1, keepdims=True)) / s


def _cce_infer(types, attrs):
    (yd, ys), (pd, ps) = types
    if len(ps) != 2:
        raise ShapeError(f"categorical losses need [batch, classes] predictions, got {_fmt(ps)}")
    return _per_sample(types, attrs)


_loss("categorical_crossentropy", _cce_infer)((_cce, _cce_grad))


def _sparse_infer(types, attrs):
    (yd, ys), (pd, ps) = types
    if yd != I64 or len(ys) != 1:
        raise ShapeError(f"sparse labels must be integers of shape [B], got {yd}{_fmt(ys)}")
    if len(ps) != 2:
        raise ShapeError(f"sparse categorical losses need [batch, classes] predictions, got {_fmt(ps)}")
    return [(F32, (ps[0],))]


def _onehot(labels, like):
    out = np.zeros(like.shape, dtype=like.dtype)
    out[np.arange(len(labels)), labels] = 1
    return out


def _scce(labels, p, from_logits=False, temperature=1.0):
    """Sparse categorical cross-entropy: integer labels, same values as the one-hot form."""
    return _cce(_onehot(labels, p), p, from_logits, 0.0, temperature)


def _scce_grad(labels, p, g, from_logits=False, temperature=1.0):
    return _cce_grad(_onehot(labels, p), p, g, from_logits, 0.0, temperature)


_loss("sparse_categorical_crossentropy", _sparse_infer)((_scce, _scce_grad))


def _kld(y, p):
    """Keras KL divergence: both sides clipped to [1e-7, 1]."""
    yc = np.clip(y, EPSILON, 1)
    pc = np.clip(p, EPSILON, 1)
    return (yc * np.log(yc / pc)).sum(axis=_batch_rows(p))


def _kld_grad(y, p, g):
    yc = np.clip(y, EPSILON, 1)
    inside = (p > EPSILON) & (p < 1)
    return _g(g, p) * np.where(inside, -yc / np.clip(p, EPSILON, 1), 0)


_loss("kl_divergence")((_kld, _kld_grad))

LOSS_PRIMITIVES = ("mean_squared_error", "mean_absolute_error", "huber", "binary_crossentropy",
                   "categorical_crossentropy", "sparse_categorical_crossentropy", "kl_divergence")


# ---------------------------------------------------------------- metrics (per sample, no gradient)

@primitive("sparse_accuracy", _sparse_infer)
def sparse_accuracy(labels, p):
    return (np.argmax(p, axis=-1) == labels).astype(p.dtype)


@primitive("categorical_accuracy", _per_sample)
def categorical_accuracy(y, p):
    return (np.argmax(p, axis=-1) == np.argmax(y, axis=-1)).astype(p.dtype)


@primitive("binary_accuracy", _per_sample)
def binary_accuracy(y, p, threshold=0.5):
    return ((p > threshold).astype(p.dtype) == y).astype(p.dtype).mean(axis=_batch_rows(p))


# ---------------------------------------------------------------- optimizers
# Update ops write the parameter and its state in place and return nothing.
# Inputs: param, grad, *state, step (i64 scalar: updates done so far).

def _update_infer(types, attrs):
    (pd, ps), (gd, gs) = types[0], types[1]
    if ps != gs:
        raise ShapeError(f"gradient {_fmt(gs)} does not match parameter {_fmt(ps)}")
    return []


def _constant(step, lr):
    return lr


def _exponential_decay(step, lr, rate, steps, staircase):
    p = step / steps
    return lr * rate ** (math.floor(p) if staircase else p)


def _inverse_time_decay(step, lr, rate, steps, staircase):
    p = step / steps
    return lr / (1 + rate * (math.floor(p) if staircase else p))


def _cosine_decay(step, lr, steps, alpha):
    p = min(step, steps) / steps
    return lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * p)) + alpha)


# Plain scalar Python with `math`: the numpy target calls these directly and
# the cpu target njit-compiles the same functions; the cuda target calls them
# on the host per step and passes the rate to its update kernel (a device
# function would need a GPU to compile to PTX). Arguments after (step, lr)
# are catalog.SCHEDULES' options.
SCHEDULE_FUNCTIONS = {
    "constant": _constant,
    "exponential_decay": _exponential_decay,
    "inverse_time_decay": _inverse_time_decay,
    "cosine_decay": _cosine_decay,
}


def learning_rate(step, lr, schedule=("constant",)):
    """The learning rate after `step` updates; `schedule` is (kind, *options)."""
    return SCHEDULE_FUNCTIONS[schedule[0]](step, lr, *schedule[1:])


@primitive("sgd_update", _update_infer)
def sgd_update(w, g, velocity, step, lr, momentum=0.0, nesterov=False, schedule=("constant",)):
    """Keras SGD: v = m*v - lr*g; w += v (nesterov: w += m*v - lr*g)."""
    t = w.dtype.type
    lr = t(learning_rate(int(step), lr, schedule))
    if momentum:
        velocity *= t(momentum)
        velocity -= lr * g
        if nesterov:
            w += t(momentum) * velocity - lr * g
        else:
            w += velocity
    else:
        w -= lr * g
    return ()


def _adam_core(w, g, m, v, step, lr, beta_1, beta_2, epsilon):
    t = w.dtype.type
    k = int(step) + 1
    alpha = t(lr * np.sqrt(1 - beta_2 ** k) / (1 - beta_1 ** k))
    m += (g - m) * t(1 - beta_1)
    v += (g * g - v) * t(1 - beta_2)
    w -= alpha * m / (np.sqrt(v) + t(epsilon))


@primitive("adam_update", _update_infer)
def adam_update(w, g, m, v, step, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, schedule=("constant",)):
    """Keras Adam (bias correction folded into the step size, epsilon outside the root)."""
    _adam_core(w, g, m, v, step, learning_rate(int(step), lr, schedule), beta_1, beta_2, epsilon)
    return ()


@primitive("adamw_update", _update_infer)
def adamw_update(w, g, m, v, step, lr=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 weight_decay=0.004, schedule=("constant",)):
    """Keras AdamW: decoupled decay w -= lr*wd*w first, then the Adam step."""
    rate = learning_rate(int(step), lr, schedule)
    w -= w * w.dtype.type(rate * weight_decay)
    _adam_core(w, g, m, v, step, rate, beta_1, beta_2, epsilon)
    return ()


@primitive("rmsprop_update", _update_infer)
def rmsprop_update(w, g, velocity, momentum_buf, step, lr=0.001, rho=0.9, momentum=0.0,
                   epsilon=1e-7, schedule=("constant",)):
    """Keras RMSprop: v = rho*v + (1-rho)*g^2; step lr*g/sqrt(v + eps), with optional momentum."""
    t = w.dtype.type
    rate = t(learning_rate(int(step), lr, schedule))
    velocity *= t(rho)
    velocity += t(1 - rho) * g * g
    increment = rate * g / np.sqrt(velocity + t(epsilon))
    if momentum:
        momentum_buf *= t(momentum)
        momentum_buf += increment
        w -= momentum_buf
    else:
        w -= increment
    return ()


UPDATE_STATE = {  # optimizer primitive -> names of its state buffers (one per parameter each)
    "sgd_update": ("velocity",),
    "adam_update": ("m", "v"),
    "adamw_update": ("m", "v"),
    "rmsprop_update": ("velocity", "momentum"),
}


@primitive("constant", lambda types, attrs: [(F32, ())])
def constant(value):
    """A float32 scalar: the seed of the backward pass."""
    return np.asarray(value, dtype=np.float32)
