"""The cpu target's one lowering table, keyed by primitive: an op becomes calls of
the generic kernels (`cpu_kernels.py`), the rows of the interpreter's table.

A lowering gets the op and `ahead`, which lets it absorb the next op into one
kernel (bias + activation, activation gradient + bias gradient), and returns
its calls: each names a kernel and gives its operands, views of values (their
place in the arena is decided later, per batch size), whole numbers and
float64 options taken from the IR's parsed attributes, never from spec text.
"""
from __future__ import annotations

from typing import Callable

from modelc.compiler import elementwise
from modelc.compiler.codegen import cpu_image_kernels  # noqa: F401  (registers the image kernels)
from modelc.compiler.codegen.cpu_kernels import Call, Formula, View, flat, mat, split_at
from modelc.compiler.ir import F32, Op, Value
from modelc.compiler.primitives import PRIMITIVES

LOWERINGS: dict[str, Callable] = {}


def lowering(*names):
    def register(fn):
        for name in names:
            LOWERINGS[name] = fn
        return fn
    return register


def _options(op: Op) -> tuple[float, ...]:
    """An activation's parameters, in its definition's order, with Keras's defaults."""
    act = elementwise.ACTIVATIONS[op.attrs["fn"]]
    return tuple(float(op.attrs.get(k, default)) for k, default in act.params.items())


# ---------------------------------------------------------------- linear algebra

@lowering("matmul")
def _matmul(op: Op, ahead):
    """BLAS for every product, transposes passed as views. Measured (bench/RESULTS.md):
    our own loops lost even for the 10-wide products of MNIST and for 2-3-unit layers."""
    a, b = op.inputs
    name = f"k_matmul_{'t' if op.attrs.get('ta') else 'n'}{'t' if op.attrs.get('tb') else 'n'}"
    return [Call(name, (mat(a), mat(b), mat(op.out)))]


@lowering("bias_add")
def _bias_add(op: Op, ahead):
    x, b = op.inputs
    fused = ahead(lambda nxt: nxt.prim == "act" and nxt.inputs[0] is op.out)
    if fused is None:
        return [Call("k_bias_add", (mat(x), flat(b), mat(op.out)))]
    return [Call(f"k_bias_act_{fused.attrs['fn']}", (mat(x), flat(b), mat(op.out), mat(fused.out))
                 + _options(fused))]


@lowering("sum_to_last")
def _sum_to_last(op: Op, ahead):
    return [Call("k_sum_to_last", (mat(op.inputs[0]), flat(op.out)))]


# ---------------------------------------------------------------- structure

@lowering("reshape")
def _reshape(op: Op, ahead):
    return []    # a view: the output lives where its input does


@lowering("add")
def _add(op: Op, ahead):
    """Left to right, as the reference: ((x0 + x1) + x2) + ..., the later terms added in place."""
    first, second, *rest = op.inputs
    out = flat(op.out)
    return [Call("k_add", (flat(first), flat(second), out))] + [Call("k_add", (out, flat(x), out)) for x in rest]


@lowering("mul")
def _mul(op: Op, ahead):
    a, b = op.inputs
    return [Call("k_mul", (flat(a), flat(b), flat(op.out)))]


@lowering("concat")
def _concat(op: Op, ahead):
    axis = op.attrs["axis"]
    outer, batched, inner = split_at(op.out, axis)
    out = View(op.out, outer, batched, int(op.out.shape[axis]) * inner)
    calls, offset = [], 0
    for x in op.inputs:
        part = int(x.shape[axis]) * inner
        calls.append(Call("k_copy_cols", (View(x, outer, batched, part), out, offset)))
        offset += part
    return calls


@lowering("slice")
def _slice(op: Op, ahead):
    (x,) = op.inputs
    axis = op.attrs["axis"]
    outer, batched, inner = split_at(x, axis)
    return [Call("k_slice_cols", (View(x, outer, batched, int(x.shape[axis]) * inner),
                                  View(op.out, outer, batched, int(op.out.shape[axis]) * inner),
                                  int(op.attrs["start"]) * inner))]


@lowering("dropout")
def _dropout(op: Op, ahead):
    x, _step = op.inputs
    y, mask = op.outputs
    rate = float(op.attrs["rate"])
    return [Call("k_dropout", (flat(x), flat(y), flat(mask), int(op.attrs["seed"]), rate, 1.0 - rate))]


# ---------------------------------------------------------------- activations

@lowering("act")
def _act(op: Op, ahead):
    return [Call(f"k_act_{op.attrs['fn']}", (flat(op.inputs[0]), flat(op.out)) + _options(op))]


@lowering("act_grad")
def _act_grad(op: Op, ahead):
    g, x, y = op.inputs
    bias = ahead(lambda nxt: nxt.prim == "sum_to_last" and nxt.inputs[0] is op.out)
    views = (mat(g), mat(x), mat(y), mat(op.out))
    if bias is None:
        return [Call(f"k_act_grad_{op.attrs['fn']}", views + _options(op))]
    return [Call(f"k_act_grad_bias_{op.attrs['fn']}", views + (flat(bias.out),) + _options(op))]


@lowering("softmax", "log_softmax")
def _softmax(op: Op, ahead):
    return [Call(f"k_{op.prim}", (mat(op.inputs[0]), mat(op.out), float(op.attrs.get("temperature", 1.0))))]


@lowering("softmax_grad", "log_softmax_grad")
def _softmax_grad(op: Op, ahead):
    g, y = op.inputs
    return [Call(f"k_{op.prim}", (mat(g), mat(y), mat(op.out), float(op.attrs.get("temperature", 1.0))))]


# ---------------------------------------------------------------- batch mean and constants

@lowering("mean")
def _mean(op: Op, ahead):
    return [Call("k_mean", (flat(op.inputs[0]), flat(op.out)))]


@lowering("mean_grad")
def _mean_grad(op: Op, ahead):
    return [Call("k_mean_grad", (flat(op.inputs[0]), flat(op.out)))]


@lowering("constant")
def _constant(op: Op, ahead):
    return [Call("k_constant", (flat(op.out), float(op.attrs["value"])))]


# ---------------------------------------------------------------- images (cpu_image_kernels.py)

WORKSPACE = 1 << 18     # floats of patches a convolution works at a time: 1 MB, a core's L2


def scratch(op: Op, what: str, rows: int, cols: int) -> View:
    """Arena space a call needs only while it runs (the planner gives it no value of the graph)."""
    return mat(Value(f"{op.outputs[0].name}.{what}", F32, (rows, cols), "scratch"))


def _geometry(x_shape, window, out_shape, attrs) -> tuple[int, ...]:
    (_, h, w, c), (_, oh, ow, _) = x_shape, out_shape
    (sh, sw), (pt, _, pl, _) = attrs["strides"], attrs["pads"]
    return (int(h), int(w), int(c), int(window[0]), int(window[1]), int(sh), int(sw), int(pt), int(pl),
            int(oh), int(ow))


def _workspace(op: Op, positions: int, depth: int) -> View:
    """A whole number of images' patches, [images * positions, depth], about WORKSPACE floats."""
    images = max(1, WORKSPACE // (positions * depth))
    return scratch(op, "patches", images * positions, depth)


@lowering("conv2d")
def _conv2d(op: Op, ahead):
    x, k = op.inputs
    geometry = _geometry(x.shape, k.shape[:2], op.out.shape, op.attrs)
    ws = _workspace(op, geometry[-2] * geometry[-1], int(k.shape[0] * k.shape[1] * k.shape[2]))
    bias = ahead(lambda nxt: nxt.prim == "bias_add" and nxt.inputs[0] is op.out)
    act = bias and ahead(lambda nxt: nxt.prim == "act" and nxt.inputs[0] is bias.out)
    if act:       # bias and activation on each chunk's rows while they are in the cache
        return [Call(f"k_conv2d_bias_act_{act.attrs['fn']}", (flat(x), mat(k), flat(bias.inputs[1]),
                     flat(bias.out), flat(act.out), ws) + geometry + _options(act))]
    calls = [Call("k_conv2d", (flat(x), mat(k), flat(op.out), ws) + geometry)]
    if bias:
        calls.append(Call("k_bias_add", (mat(op.out), flat(bias.inputs[1]), mat(bias.out))))
    return calls


@lowering("conv2d_kernel_grad")
def _conv2d_kernel_grad(op: Op, ahead):
    x, g = op.inputs
    geometry = _geometry(x.shape, op.attrs["window"], g.shape, op.attrs)
    depth, filters = int(op.out.shape[0] * op.out.shape[1] * op.out.shape[2]), int(op.out.shape[3])
    ws = _workspace(op, geometry[-2] * geometry[-1], depth)
    return [Call("k_conv2d_kernel_grad", (flat(x), flat(g), mat(op.out), ws, scratch(op, "part", depth, filters))
                 + geometry)]


@lowering("conv2d_input_grad")
def _conv2d_input_grad(op: Op, ahead):
    g, k = op.inputs
    geometry = _geometry(op.out.shape, k.shape[:2], g.shape, op.attrs)
    ws = _workspace(op, geometry[-2] * geometry[-1], int(k.shape[0] * k.shape[1] * k.shape[2]))
    return [Call("k_conv2d_input_grad", (flat(g), mat(k), flat(op.out), ws) + geometry)]


@lowering("max_pool", "avg_pool")
def _pool(op: Op, ahead):
    (x,) = op.inputs
    return [Call(f"k_{op.prim}", (flat(x), flat(op.out)) + _geometry(x.shape, op.attrs["window"], op.out.shape,
                                                                      op.attrs))]


@lowering("max_pool_grad")
def _max_pool_grad(op: Op, ahead):
    g, x = op.inputs
    return [Call("k_max_pool_grad", (flat(g), flat(x), flat(op.out))
                 + _geometry(x.shape, op.attrs["window"], g.shape, op.attrs))]


@lowering("avg_pool_grad")
def _avg_pool_grad(op: Op, ahead):
    (g,) = op.inputs
    return [Call("k_avg_pool_grad", (flat(g), flat(op.out))
                 + _geometry(op.out.shape, op.attrs["window"], g.shape, op.attrs))]


@lowering("batch_normalize", "layer_normalize")
def _normalize_batch_or_layer(op: Op, ahead):
    xhat, *stats = op.outputs
    return [Call(f"k_{op.prim}", (mat(op.inputs[0]), mat(xhat)) + tuple(flat(v) for v in stats)
                 + (float(op.attrs["epsilon"]),))]


@lowering("batch_normalize_grad", "layer_normalize_grad")
def _normalize_grad(op: Op, ahead):
    g, xhat, var = op.inputs
    return [Call(f"k_{op.prim}", (mat(g), mat(xhat), flat(var), mat(op.out), float(op.attrs["epsilon"])))]


@lowering("normalize")
def _normalize(op: Op, ahead):
    x, mean, var = op.inputs
    return [Call("k_normalize", (mat(x), flat(mean), flat(var), mat(op.out), float(op.attrs["epsilon"])))]


@lowering("scale_last")
def _scale_last(op: Op, ahead):
    x, s = op.inputs
    return [Call("k_scale_last", (mat(x), flat(s), mat(op.out)))]


@lowering("moving_average")
def _moving_average(op: Op, ahead):
    moving, stat = op.inputs
    momentum = float(op.attrs["momentum"])
    return [Call("k_moving_average", (flat(moving), flat(stat), momentum, 1.0 - momentum))]


# ---------------------------------------------------------------- formulas
# Losses, metrics, their gradients and optimizer updates (and sum_squares, for clipping):
# kernels that cpu_formulas generates from the catalog's formulas (cpu_formula_calls.py).

def _formula(op: Op, ahead):
    return [Formula(op)]


for _prim in PRIMITIVES.values():
    if _prim.formula is not None or _prim.name == "sum_squares":
        LOWERINGS[_prim.name] = _formula
