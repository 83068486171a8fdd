"""The ONNX lowering of each IR primitive, and the builder the lowerings emit through.

`RULES` maps a primitive's name to its rule, `rule(builder, op)`: it reads the op's
inputs from the builder (in the layout it wants), emits ONNX nodes and names the
op's outputs. A primitive without a rule is refused by `onnx_export`, never guessed.

Layouts. modelc keeps images NHWC, as Keras does; ONNX's Conv, MaxPool and
AveragePool take NCHW. Every value is made in one layout and `Builder.tensor`
gives it in another by one Transpose, made once and reused. Convolution and
pooling take and make NCHW; the elementwise ops, the per-channel ones (a bias, a
normalization's statistics and gamma, reshaped to [C, 1, 1]), softmax, layer
normalization, add and concat work in the layout their input already has (an
axis of modelc's is mapped to where that layout keeps it); reshape and matmul
need modelc's order. So a convnet is transposed once after its input and once
before its flatten, not around each convolution.

Activations are not written here: the `act` rule lowers the activation's own
expression (`elementwise.ACTIVATIONS`, folded with the op's options by
`expr.fold`) node by node, so a new activation needs no ONNX code.
"""
from __future__ import annotations

import ast as pyast
import re
from typing import Callable

import numpy as np
from onnx import helper, numpy_helper

from modelc.compiler import elementwise, expr
from modelc.compiler.ir import Graph, Op, Value
from modelc.errors import ModelcError

MODELC = "modelc"             # a value's own layout (images NHWC)
NCHW = "nchw"                 # channels first: how ONNX's Conv and pooling take images
_TO_NCHW = (0, 3, 1, 2)       # NHWC -> NCHW
_TO_MODELC = (0, 2, 3, 1)     # NCHW -> NHWC
REDUCE_AXES_AS_INPUT = 18     # the opset from which ReduceMean takes its axes as an input
_BUG = "this is a bug in modelc's ONNX exporter; please report it"


def _permutation(layout: str, rank: int) -> tuple[int, ...]:
    """Where a tensor of `layout` keeps each of its axes: position i holds modelc's axis perm[i]."""
    return _TO_NCHW if layout == NCHW else tuple(range(rank))


def axis_in(layout: str, axis: int, rank: int) -> int:
    """The position of modelc's axis `axis` in a tensor of `layout`."""
    return _permutation(layout, rank).index(axis % rank)


class Builder:
    """The ONNX graph being built: nodes, initializers, unique names, each IR value in the
    layouts asked for so far, and constants made once."""

    def __init__(self, graph: Graph, params: dict[str, np.ndarray], opset: int):
        self.opset = opset
        self.nodes: list = []
        self.initializers: list = []
        self._params = {v.id: params[v.name] for v in graph.params}    # value id -> its array
        self._names: set[str] = set()
        self._tensors: dict[int, dict[str, str]] = {}      # value id -> layout -> ONNX name
        self._made: dict[int, str] = {}                    # value id -> the layout it was made in
        self._constants: dict[tuple, str] = {}

    # ------------------------------------------------------------ names and nodes

    def fresh(self, base: str) -> str:
        """A new tensor name from `base`, as a C identifier (what ONNX's IR asks names to be)."""
        name = re.sub(r"\W", "_", base, flags=re.ASCII)
        name = name if re.match(r"[A-Za-z_]", name) else f"v_{name}"
        candidate, n = name, 1
        while candidate in self._names:
            candidate, n = f"{name}_{n}", n + 1
        self._names.add(candidate)
        return candidate

    def node(self, op_type: str, inputs: list[str], base: str = "t", out: str | None = None, **attrs) -> str:
        """Append one node; returns its output's name (`out`, or a fresh one from `base`)."""
        out = out or self.fresh(base)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{op_type}_{out}", **attrs))
        return out

    def output(self, value: Value, layout: str = MODELC) -> str:
        """The name of `value` in `layout`, for the node about to make it (its first layout
        is the one it is made in)."""
        name = self.fresh(value.name if layout == MODELC else f"{value.name}.{layout}")
        self._tensors.setdefault(value.id, {})[layout] = name
        self._made.setdefault(value.id, layout)
        return name

    def initializer(self, array: np.ndarray, base: str) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    # ------------------------------------------------------------ values in layouts

    def layout(self, value: Value) -> str:
        """The layout `value` was made in (a weight: modelc's)."""
        self._known(value)
        return self._made[value.id]

    def shared_layout(self, values) -> str:
        """One layout for the operands of add or concat: channels first if any image operand
        already exists so (a convolution's output), else modelc's."""
        return NCHW if any(v.rank == 4 and NCHW in self._known(v) for v in values) else MODELC

    def tensor(self, value: Value, layout: str | None = None) -> str:
        """The name of `value` in `layout` (default: the one it was made in), transposed once."""
        known = self._known(value)
        layout = layout or self._made[value.id]
        if layout not in known:
            made = known[self._made[value.id]]
            self.node("Transpose", [made], out=self.output(value, layout),
                      perm=list(_TO_NCHW if layout == NCHW else _TO_MODELC))
        return known[layout]

    def row_major(self, value: Value) -> str:
        """A name of `value` whose elements, in row-major order, are in modelc's order (what a
        reshape reads): channels first serves as it is when the transpose moves only unit axes
        (one channel, or a 1x1 image)."""
        if self.layout(value) == NCHW:
            _, h, w, c = value.shape
            if c == 1 or h * w == 1:
                return self.tensor(value, NCHW)
        return self.tensor(value, MODELC)

    def _known(self, value: Value) -> dict[str, str]:
        if value.id not in self._tensors:
            if value.id not in self._params:
                raise ModelcError(f"ONNX export: '{value.name}' is read, but the rule of the op making it "
                                  "made no ONNX tensor for it", hint=_BUG)
            self._tensors[value.id] = {MODELC: self.initializer(self.weight(value), value.name)}
            self._made[value.id] = MODELC
        return self._tensors[value.id]

    # ------------------------------------------------------------ weights and constants

    def weight(self, value: Value) -> np.ndarray:
        """The float32 array of a weight (a parameter or a moving statistic)."""
        if value.id not in self._params:
            raise ModelcError(f"ONNX export: '{value.name}' is computed, but the exporter takes it as a "
                              "weight of the model (a kernel, bias or statistic)", hint=_BUG)
        return np.asarray(self._params[value.id], np.float32)

    def derived(self, value: Value, suffix: str, array: np.ndarray) -> str:
        """A weight reordered or reshaped once, at export (a kernel as OIHW, a bias as [C, 1, 1])."""
        key = ("derived", value.id, suffix)
        if key not in self._constants:
            self._constants[key] = self.initializer(array, f"{value.name}.{suffix}")
        return self._constants[key]

    def channels(self, vector: Value, layout: str, rank: int) -> str:
        """A weight along modelc's last axis, shaped to broadcast over a tensor of `layout`."""
        trailing = rank - 1 - axis_in(layout, -1, rank)
        if trailing == 0:
            return self.tensor(vector)
        return self.derived(vector, "c" + "1" * trailing, self.weight(vector).reshape((-1,) + (1,) * trailing))

    def constant(self, array: np.ndarray, base: str) -> str:
        """An initializer holding `array`, one per distinct value."""
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            self._constants[key] = self.initializer(array, base)
        return self._constants[key]

    def scalar(self, value: float) -> str:
        return self.constant(np.array(value, np.float32), f"c_{float(value):.9g}")

    def ints(self, values) -> str:
        return self.constant(np.array(list(values), np.int64), "shape" if len(values) > 1 else "axis")

    def reduce_mean(self, x: str, axis: int, base: str) -> str:
        """ReduceMean over one axis, keeping it (the axes are an attribute before opset 18)."""
        if self.opset >= REDUCE_AXES_AS_INPUT:
            return self.node("ReduceMean", [x, self.ints([axis])], base, keepdims=1)
        return self.node("ReduceMean", [x], base, axes=[axis], keepdims=1)


# ---------------------------------------------------------------- expressions

_BINARY = {pyast.Add: "Add", pyast.Sub: "Sub", pyast.Mult: "Mul", pyast.Div: "Div", pyast.Pow: "Pow",
           pyast.BitAnd: "And", pyast.BitOr: "Or"}
_COMPARE = {pyast.Gt: "Greater", pyast.Lt: "Less", pyast.GtE: "GreaterOrEqual", pyast.LtE: "LessOrEqual",
            pyast.Eq: "Equal"}


def _op(op_type: str):
    return lambda b, args, out: b.node(op_type, args, out=out)


# The functions of the expression language (`expr.FUNCTIONS`) as ONNX nodes; `zero` and `one`
# are constants (see `lower_expression`). ONNX has no log1p or expm1: they are written out.
CALLS: dict[str, Callable] = {
    "exp": _op("Exp"), "log": _op("Log"), "tanh": _op("Tanh"), "sqrt": _op("Sqrt"), "abs": _op("Abs"),
    "erf": _op("Erf"), "sigmoid": _op("Sigmoid"), "softplus": _op("Softplus"), "sign": _op("Sign"),
    "where": _op("Where"), "maximum": _op("Max"), "minimum": _op("Min"),
    "log1p": lambda b, args, out: b.node("Log", [b.node("Add", [args[0], b.scalar(1.0)])], out=out),
    "expm1": lambda b, args, out: b.node("Sub", [b.node("Exp", args), b.scalar(1.0)], out=out),
    "clip": lambda b, args, out: b.node("Min", [b.node("Max", args[:2]), args[2]], out=out),
}
_CONSTANT_CALLS = {"zero": 0.0, "one": 1.0}


def _reads_x(node) -> bool:
    """Whether a subexpression has the shape of `x`: it reads `x` other than through zero or one."""
    if isinstance(node, pyast.Call) and node.func.id in _CONSTANT_CALLS:
        return False
    if isinstance(node, pyast.Name):
        return node.id == "x"
    return any(_reads_x(child) for child in pyast.iter_child_nodes(node))


def lower_expression(b: Builder, expression: str, x: str, out: str) -> str:
    """Emit the nodes of `expression` (one of modelc's own, over the variable `x`, options
    already folded) reading the tensor `x`; the last node writes `out`. Numbers are float32
    constants, as the numpy target evaluates them; `zero(x)` and `one(x)` are constants, and
    a result that reads no array is expanded to the shape of `x`."""

    def visit(node, target=None) -> str:
        def emit(op_type, inputs):
            return b.node(op_type, inputs, f"{out}.t", out=target)

        if isinstance(node, pyast.Name) and node.id == "x":
            return x
        if isinstance(node, pyast.Constant) and isinstance(node.value, (int, float)):
            return b.scalar(node.value)
        if isinstance(node, pyast.UnaryOp) and isinstance(node.op, pyast.UAdd):
            return visit(node.operand, target)
        if isinstance(node, pyast.UnaryOp) and isinstance(node.op, (pyast.USub, pyast.Not)):
            return emit("Neg" if isinstance(node.op, pyast.USub) else "Not", [visit(node.operand)])
        if isinstance(node, pyast.BinOp) and type(node.op) in _BINARY:
            return emit(_BINARY[type(node.op)], [visit(node.left), visit(node.right)])
        if isinstance(node, pyast.Compare) and isinstance(node.ops[0], pyast.NotEq):
            return emit("Not", [b.node("Equal", [visit(node.left), visit(node.comparators[0])])])
        if isinstance(node, pyast.Compare) and type(node.ops[0]) in _COMPARE:
            return emit(_COMPARE[type(node.ops[0])], [visit(node.left), visit(node.comparators[0])])
        if isinstance(node, pyast.Call) and node.func.id in _CONSTANT_CALLS:
            return b.scalar(_CONSTANT_CALLS[node.func.id])
        if isinstance(node, pyast.Call) and node.func.id in CALLS:
            return CALLS[node.func.id](b, [visit(a) for a in node.args], target)
        raise ModelcError(f"ONNX export: cannot lower '{pyast.unparse(node)}' of the formula {expression!r}",
                          hint="give the expression language's new construct a lowering in onnx_rules.CALLS")

    tree = expr.parse(expression).body
    if not _reads_x(tree):     # a constant formula: zeros_like and ones_like keep the shape of x
        return b.node("Expand", [visit(tree), b.node("Shape", [x])], out=out)
    if visit(tree, out) != out:      # the formula is `x` itself
        return b.node("Identity", [x], out=out)
    return out


# ---------------------------------------------------------------- the rules

RULES: dict[str, Callable[[Builder, Op], None]] = {}


def rule(*prims: str):
    def register(fn):
        for prim in prims:
            RULES[prim] = fn
        return fn
    return register


@rule("matmul")
def _matmul(b: Builder, op: Op) -> None:
    operands = [b.node("Transpose", [b.tensor(v)], perm=[1, 0]) if op.attrs.get(flag) else b.tensor(v)
                for v, flag in zip(op.inputs, ("ta", "tb"))]
    b.node("MatMul", operands, out=b.output(op.out))


def _per_channel(op_type: str):
    """x op a weight along the last axis (a bias, a gamma), in the layout x has."""
    def lower(b: Builder, op: Op) -> None:
        x, vector = op.inputs
        layout = b.layout(x)
        b.node(op_type, [b.tensor(x), b.channels(vector, layout, x.rank)], out=b.output(op.out, layout))
    return lower


RULES["bias_add"] = _per_channel("Add")
RULES["scale_last"] = _per_channel("Mul")


@rule("act")
def _act(b: Builder, op: Op) -> None:
    (x,) = op.inputs
    fn = elementwise.ACTIVATIONS[op.attrs["fn"]]
    options = {k: float(op.attrs.get(k, default)) for k, default in fn.params.items()}
    layout = b.layout(x)
    lower_expression(b, expr.fold(fn.forward, options), b.tensor(x), b.output(op.out, layout))


@rule("softmax", "log_softmax")
def _softmax(b: Builder, op: Op) -> None:
    """Over modelc's last axis (opset 13's Softmax normalizes that one axis), after the division
    by the temperature."""
    (x,) = op.inputs
    layout = b.layout(x)
    z = b.tensor(x)
    if op.attrs.get("temperature", 1.0) != 1.0:
        z = b.node("Div", [z, b.scalar(op.attrs["temperature"])], f"{op.out.name}.tempered")
    b.node("Softmax" if op.prim == "softmax" else "LogSoftmax", [z], out=b.output(op.out, layout),
           axis=axis_in(layout, -1, x.rank))


@rule("add")
def _add(b: Builder, op: Op) -> None:
    """Left to right, as the numpy target adds."""
    layout = b.shared_layout(op.inputs)
    names = [b.tensor(v, layout) for v in op.inputs]
    total = names[0]
    for i, name in enumerate(names[1:], 2):
        total = b.node("Add", [total, name], out=b.output(op.out, layout) if i == len(names) else None)


@rule("concat")
def _concat(b: Builder, op: Op) -> None:
    layout = b.shared_layout(op.inputs)
    rank = op.out.rank
    b.node("Concat", [b.tensor(v, layout) for v in op.inputs], out=b.output(op.out, layout),
           axis=axis_in(layout, op.attrs["axis"], rank))


@rule("reshape")
def _reshape(b: Builder, op: Op) -> None:
    (x,) = op.inputs
    b.node("Reshape", [b.row_major(x), b.ints([-1, *op.attrs["shape"]])], out=b.output(op.out))


def _window_attrs(window, strides, pads) -> dict:
    """modelc's geometry as ONNX's: pads (top, bottom, left, right) -> (top, left, bottom, right)."""
    top, bottom, left, right = pads
    return {"kernel_shape": list(window), "strides": list(strides), "pads": [top, left, bottom, right]}


@rule("conv2d")
def _conv2d(b: Builder, op: Op) -> None:
    """Keras's kernel [kh, kw, in, out] reordered once to ONNX's [out, in, kh, kw]."""
    x, kernel = op.inputs
    weights = b.derived(kernel, "oihw", b.weight(kernel).transpose(3, 2, 0, 1))
    b.node("Conv", [b.tensor(x, NCHW), weights], out=b.output(op.out, NCHW),
           **_window_attrs(kernel.shape[:2], op.attrs["strides"], op.attrs["pads"]))


@rule("max_pool")
def _max_pool(b: Builder, op: Op) -> None:
    """ONNX's MaxPool never lets its padding win, as modelc's -inf padding."""
    b.node("MaxPool", [b.tensor(op.inputs[0], NCHW)], out=b.output(op.out, NCHW),
           **_window_attrs(op.attrs["window"], op.attrs["strides"], op.attrs["pads"]))


@rule("avg_pool")
def _avg_pool(b: Builder, op: Op) -> None:
    """The mean over the window's elements inside the input (count_include_pad=0), as Keras's same."""
    b.node("AveragePool", [b.tensor(op.inputs[0], NCHW)], out=b.output(op.out, NCHW), count_include_pad=0,
           **_window_attrs(op.attrs["window"], op.attrs["strides"], op.attrs["pads"]))


@rule("normalize")
def _normalize(b: Builder, op: Op) -> None:
    """Batch normalization at inference: (x - moving_mean) / sqrt(moving_variance + epsilon)."""
    x, mean, var = op.inputs
    layout = b.layout(x)
    name = op.out.name
    centered = b.node("Sub", [b.tensor(x), b.channels(mean, layout, x.rank)], f"{name}.centered")
    spread = b.node("Add", [b.channels(var, layout, x.rank), b.scalar(op.attrs["epsilon"])], f"{name}.var_eps")
    b.node("Div", [centered, b.node("Sqrt", [spread], f"{name}.std")], out=b.output(op.out, layout))


@rule("layer_normalize")
def _layer_normalize(b: Builder, op: Op) -> None:
    """Over modelc's last axis, written out (the same for every opset and layout): the mean, the
    biased variance, (x - mean) / sqrt(var + epsilon). Its second output, the variance, is read
    only by the gradient, never by an inference graph, so it is not made."""
    (x,) = op.inputs
    xhat = op.outputs[0]
    layout = b.layout(x)
    axis = axis_in(layout, -1, x.rank)
    mean = b.reduce_mean(b.tensor(x), axis, f"{xhat.name}.mean")
    centered = b.node("Sub", [b.tensor(x), mean], f"{xhat.name}.centered")
    var = b.reduce_mean(b.node("Mul", [centered, centered], f"{xhat.name}.square"), axis, f"{xhat.name}.var")
    std = b.node("Sqrt", [b.node("Add", [var, b.scalar(op.attrs["epsilon"])], f"{xhat.name}.var_eps")],
                 f"{xhat.name}.std")
    b.node("Div", [centered, std], out=b.output(xhat, layout))
