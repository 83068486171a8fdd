"""Convolution, pooling and normalization primitives: shape rule, NumPy reference
and gradient rule of each, in one place (see `primitives.py` for the conventions).

Images are NHWC, as Keras keeps them: [B, height, width, channels]. A kernel is
[kh, kw, in, out], as Keras stores it. Geometry is explicit in the attributes,
resolved by the layer from Keras's options: `strides=(sh, sw)`, `pads=(top,
bottom, left, right)` (zeros for a convolution; left out of a pooling window),
`window=(kh, kw)` for pooling and for the kernel gradient, `size=(h, w)` for
an input gradient that cannot see its input.

Max pooling sends the gradient of a window to its first largest element, in
row-major order (as TensorFlow and PyTorch do); average pooling divides by the
number of elements of the window inside the input (TensorFlow's `same`).
Batch and layer normalization use the biased variance, as Keras does.
"""
from __future__ import annotations

import numpy as np

from modelc.compiler.ir import F32
from modelc.compiler.registry import ShapeError, primitive, require_float
from modelc.compiler.registry import fmt_shape as _fmt


def out_size(n: int, window: int, stride: int, before: int, after: int) -> int:
    """Positions of a window of `window` elements, `stride` apart, over `n` padded by before/after."""
    return (n + before + after - window) // stride + 1


def same_pads(n: int, window: int, stride: int) -> tuple[int, int]:
    """Keras's (TensorFlow's) `same` padding of one axis: ceil(n / stride) outputs,
    the odd element of padding after."""
    total = max((-(-n // stride) - 1) * stride + window - n, 0)
    return total // 2, total - total // 2


def _out_hw(h, w, window, strides, pads):
    return (out_size(h, window[0], strides[0], pads[0], pads[1]),
            out_size(w, window[1], strides[1], pads[2], pads[3]))


def _image(t, what):
    require_float(t, what)
    if len(t[1]) != 4:
        raise ShapeError(f"{what} needs [batch, height, width, channels], got {_fmt(t[1])}")
    return t[1]


def _windows(x, window, strides, pads, fill):
    """Yield (i, j, view): for each offset of the window, the strided view of the
    padded input that offset reads, one element per output position."""
    (kh, kw), (sh, sw), (t, b, l, r) = window, strides, pads
    padded = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=fill)
    oh, ow = _out_hw(x.shape[1], x.shape[2], window, strides, pads)
    for i in range(kh):
        for j in range(kw):
            yield i, j, padded[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]


def _scatter(shape, window, strides, pads, parts, dtype):
    """The adjoint of `_windows`: add each offset's part back into a zero input."""
    (kh, kw), (sh, sw), (t, b, l, r) = window, strides, pads
    n, h, w, c = shape
    padded = np.zeros((n, h + t + b, w + l + r, c), dtype)
    for i, j, part in parts:
        oh, ow = part.shape[1], part.shape[2]
        padded[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :] += part
    return padded[:, t:t + h, l:l + w, :]


# ---------------------------------------------------------------- convolution

def _conv_infer(types, attrs):
    b, h, w, c = _image(types[0], "conv2d input")
    kh, kw, cin, f = types[1][1]
    if cin != c:
        raise ShapeError(f"conv2d: the kernel takes {cin} channels but the input has {c}")
    oh, ow = _out_hw(h, w, (kh, kw), attrs["strides"], attrs["pads"])
    if oh < 1 or ow < 1:
        raise ShapeError(f"conv2d: a {kh}x{kw} kernel does not fit the {h}x{w} input")
    return [(F32, (b, oh, ow, f))]


def _conv_vjp(emit, op, grads):
    (g,) = grads
    x, k = op.inputs
    geometry = {"strides": op.attrs["strides"], "pads": op.attrs["pads"]}
    return [emit("conv2d_input_grad", g, k, size=tuple(x.shape[1:3]), **geometry),
            emit("conv2d_kernel_grad", x, g, window=tuple(k.shape[:2]), **geometry)]


@primitive("conv2d", _conv_infer, _conv_vjp)
def conv2d(x, k, strides, pads):
    """2-D cross-correlation (what Keras's Conv2D computes), zero padding."""
    out = None
    for i, j, view in _windows(x, k.shape[:2], strides, pads, 0):
        part = view @ k[i, j]
        out = part if out is None else out + part
    return out


def _conv_input_grad_infer(types, attrs):
    b, oh, ow, f = types[0][1]
    kh, kw, c, _ = types[1][1]
    return [(F32, (b, *attrs["size"], c))]


@primitive("conv2d_input_grad", _conv_input_grad_infer)
def conv2d_input_grad(g, k, strides, pads, size):
    """d conv2d / d input: the transposed convolution of the output gradient."""
    shape = (g.shape[0], *size, k.shape[2])
    parts = ((i, j, g @ k[i, j].T) for i in range(k.shape[0]) for j in range(k.shape[1]))
    return _scatter(shape, k.shape[:2], strides, pads, parts, g.dtype)


def _conv_kernel_grad_infer(types, attrs):
    c, f = types[0][1][3], types[1][1][3]
    return [(F32, (*attrs["window"], c, f))]


@primitive("conv2d_kernel_grad", _conv_kernel_grad_infer)
def conv2d_kernel_grad(x, g, strides, pads, window):
    """d conv2d / d kernel: each offset's input patch against the output gradient."""
    c, f = x.shape[3], g.shape[3]
    out = np.zeros((*window, c, f), x.dtype)
    flat_g = g.reshape(-1, f)
    for i, j, view in _windows(x, window, strides, pads, 0):
        out[i, j] = view.reshape(-1, c).T @ flat_g
    return out


# ---------------------------------------------------------------- pooling

def _pool_infer(types, attrs):
    b, h, w, c = _image(types[0], "pooling input")
    oh, ow = _out_hw(h, w, attrs["window"], attrs["strides"], attrs["pads"])
    if oh < 1 or ow < 1:
        raise ShapeError(f"a {attrs['window'][0]}x{attrs['window'][1]} pooling window does not fit "
                         f"the {h}x{w} input")
    return [(F32, (b, oh, ow, c))]


@primitive("max_pool", _pool_infer,
           lambda emit, op, grads: [emit("max_pool_grad", grads[0], op.inputs[0], **op.attrs)])
def max_pool(x, window, strides, pads):
    """The largest element of each window (padding never wins)."""
    out = None
    for _, _, view in _windows(x, window, strides, pads, -np.inf):
        out = view.copy() if out is None else np.maximum(out, view)
    return out


@primitive("max_pool_grad", lambda types, attrs: [types[1]])
def max_pool_grad(g, x, window, strides, pads):
    """Each window's gradient to its first largest element, in row-major order."""
    views = [view for _, _, view in _windows(x, window, strides, pads, -np.inf)]
    first = np.stack(views).argmax(axis=0)      # the first offset holding the maximum
    offsets = [(i, j) for i in range(window[0]) for j in range(window[1])]
    parts = ((i, j, np.where(first == index, g, 0)) for index, (i, j) in enumerate(offsets))
    return _scatter(x.shape, window, strides, pads, parts, g.dtype)


def _window_counts(h, w, window, strides, pads, dtype):
    """How many elements of each window lie inside the input: [1, oh, ow, 1]."""
    ones = np.ones((1, h, w, 1), dtype)
    return sum(view for _, _, view in _windows(ones, window, strides, pads, 0))


@primitive("avg_pool", _pool_infer,
           lambda emit, op, grads: [emit("avg_pool_grad", grads[0], size=tuple(op.inputs[0].shape[1:3]),
                                         **op.attrs)])
def avg_pool(x, window, strides, pads):
    """The mean of each window over its elements inside the input."""
    total = sum(view for _, _, view in _windows(x, window, strides, pads, 0))
    return total / _window_counts(x.shape[1], x.shape[2], window, strides, pads, x.dtype)


def _avg_pool_grad_infer(types, attrs):
    b, oh, ow, c = types[0][1]
    return [(F32, (b, *attrs["size"], c))]


@primitive("avg_pool_grad", _avg_pool_grad_infer)
def avg_pool_grad(g, window, strides, pads, size):
    share = g / _window_counts(*size, window, strides, pads, g.dtype)
    offsets = ((i, j, share) for i in range(window[0]) for j in range(window[1]))
    return _scatter((g.shape[0], *size, g.shape[3]), window, strides, pads, offsets, g.dtype)


# ---------------------------------------------------------------- normalization

def _axes(x):
    return tuple(range(x.ndim - 1))


def _batch_norm_infer(types, attrs):
    require_float(types[0], "batch normalization input")
    x = types[0][1]
    return [(F32, x), (F32, (x[-1],)), (F32, (x[-1],))]


@primitive("batch_normalize", _batch_norm_infer,
           lambda emit, op, grads: [emit("batch_normalize_grad", grads[0], op.outputs[0], op.outputs[2],
                                         **op.attrs)])
def batch_normalize(x, epsilon):
    """Training-mode batch normalization of each channel (the last axis) over every other
    axis: (x - mean) / sqrt(var + epsilon), and the batch mean and biased variance."""
    axes = _axes(x)
    mean = x.mean(axis=axes)
    var = ((x - mean) ** 2).mean(axis=axes)
    return (x - mean) / np.sqrt(var + x.dtype.type(epsilon)), mean, var


@primitive("batch_normalize_grad", lambda types, attrs: [types[0]])
def batch_normalize_grad(g, xhat, var, epsilon):
    axes = _axes(g)
    inv = 1 / np.sqrt(var + g.dtype.type(epsilon))
    return inv * (g - g.mean(axis=axes) - xhat * (g * xhat).mean(axis=axes))


def _normalize_infer(types, attrs):
    x = types[0][1]
    for t in types[1:]:
        if t[1] != (x[-1],):
            raise ShapeError(f"statistics of shape {_fmt(t[1])} do not fit {_fmt(x)}")
    return [(F32, x)]


@primitive("normalize", _normalize_infer)
def normalize(x, mean, var, epsilon):
    """Inference-mode batch normalization, with the moving statistics."""
    return (x - mean) / np.sqrt(var + x.dtype.type(epsilon))


def _layer_norm_infer(types, attrs):
    require_float(types[0], "layer normalization input")
    x = types[0][1]
    return [(F32, x), (F32, x[:-1])]


@primitive("layer_normalize", _layer_norm_infer,
           lambda emit, op, grads: [emit("layer_normalize_grad", grads[0], op.outputs[0], op.outputs[1],
                                         **op.attrs)])
def layer_normalize(x, epsilon):
    """Each position normalized over its last axis; also returns the biased variance."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + x.dtype.type(epsilon)), var[..., 0]


@primitive("layer_normalize_grad", lambda types, attrs: [types[0]])
def layer_normalize_grad(g, xhat, var, epsilon):
    inv = 1 / np.sqrt(var[..., None] + g.dtype.type(epsilon))
    return inv * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))


def _scale_infer(types, attrs):
    x, s = types[0][1], types[1][1]
    if s != (x[-1],):
        raise ShapeError(f"scale of shape {_fmt(s)} does not fit {_fmt(x)}")
    return [(F32, x)]


def _scale_vjp(emit, op, grads):
    (g,) = grads
    x, s = op.inputs
    return [emit("scale_last", g, s), emit("sum_to_last", emit("mul", g, x))]


@primitive("scale_last", _scale_infer, _scale_vjp)
def scale_last(x, s):
    """x times a vector along its last axis (a normalization's gamma)."""
    return x * s


def _moving_infer(types, attrs):
    if types[0][1] != types[1][1]:
        raise ShapeError(f"statistic {_fmt(types[1][1])} does not match {_fmt(types[0][1])}")
    return []


@primitive("moving_average", _moving_infer)
def moving_average(moving, stat, momentum):
    """moving = moving * momentum + stat * (1 - momentum), in place, as Keras updates
    batch normalization's moving mean and variance."""
    dtype = moving.dtype.type
    moving[...] = moving * dtype(momentum) + stat * dtype(1 - momentum)
    return ()
