"""Lowering each primitive to Numba-compiled Python source: one table, keyed by primitive.

A lowering gets the op and a `Names` helper and returns source lines that run
inside the batch loop of a generated `@njit` function. Arrays are
preallocated buffers (sliced to the batch size `n`), scalars are locals.
Every number in the output comes from the IR (attributes are parsed values,
emitted with repr); every variable name is made here from value ids, so no
spec text reaches the generated code.

Semantics are the NumPy references' in `primitives.py`, in float32 and in the
same order of operations, so the cpu target agrees with the numpy target to
the last few bits.
"""
from __future__ import annotations

import math

from modelc.compiler import elementwise, expr
from modelc.compiler.ir import BATCH, Op, Value
from modelc.compiler.codegen.cpu_formulas import FORMULA_KINDS, lower_call
from modelc.compiler.primitives import PRIMITIVES

LOWERINGS: dict = {}


def lowering(*names):
    def register(fn):
        for name in names:
            LOWERINGS[name] = fn
        return fn
    return register


def f32(value: float) -> str:
    """A float32 literal from a parsed number (never from text)."""
    value = float(value)
    if math.isinf(value) or math.isnan(value):
        raise ValueError(f"non-finite constant {value}")
    return f"f32({value!r})"


class Names:
    """Variable names and static sizes for one generated function."""

    def __init__(self):
        self.names: dict[int, str] = {}

    def __call__(self, value: Value) -> str:
        return self.names.setdefault(value.id, f"v{value.id}")

    @staticmethod
    def dim(d) -> str:
        return "n" if d == BATCH else str(int(d))

    def size(self, value: Value) -> str:
        """Number of elements, as source."""
        dims = [self.dim(d) for d in value.shape] or ["1"]
        static = 1
        dynamic = []
        for d in dims:
            if d == "n":
                dynamic.append(d)
            else:
                static *= int(d)
        return " * ".join(dynamic + [str(static)]) if dynamic else str(static)

    def rows_cols(self, value: Value) -> tuple[str, int]:
        """Viewed as 2-D: (rows as source, last dimension)."""
        last = int(value.shape[-1])
        rows = [self.dim(d) for d in value.shape[:-1]]
        return (" * ".join(rows) if rows else "1"), last

    def flat(self, value: Value) -> str:
        """The value as 1-D (a reshape only when it is not already; each one costs compile time)."""
        if value.rank == 1:
            return self(value)
        return f"{self(value)}.reshape({self.size(value)})"

    def mat(self, value: Value) -> str:
        """The value as 2-D (rows, last dimension)."""
        if value.rank == 2:
            return self(value)
        rows, cols = self.rows_cols(value)
        return f"{self(value)}.reshape(({rows}, {cols}))"


def _zero(array: str, size) -> list[str]:
    """Zero a 1-D array with a loop: Numba compiles slice assignment slowly (seconds per type)."""
    return [f"for i in range({size}):", f"    {array}[i] = 0"]


def _activation(fn: str, attrs: dict, x: str, y: str | None = None, derivative=False) -> str:
    act = elementwise.ACTIVATIONS[fn]
    names = {"x": x, **{k: f32(attrs.get(k, v)) for k, v in act.params.items()}}
    if y is not None:
        names["y"] = y
    return expr.to_scalar_source(act.derivative if derivative else act.forward, names)


# ---------------------------------------------------------------- linear algebra

@lowering("matmul")
def _matmul(op: Op, v: Names, ahead):
    """BLAS for every product, transposes passed as views. Measured (bench/RESULTS.md):
    our own loops lost even for the 10-wide products of MNIST and for 2-3-unit layers."""
    a, b = op.inputs
    A = f"{v(a)}.T" if op.attrs.get("ta") else v(a)
    B = f"{v(b)}.T" if op.attrs.get("tb") else v(b)
    return [f"np.dot({A}, {B}, {v(op.out)})"]


@lowering("bias_add")
def _bias_add(op: Op, v: Names, ahead):
    x, b = op.inputs
    rows, cols = v.rows_cols(x)
    z = op.out
    fused = ahead(lambda nxt: nxt.prim == "act" and nxt.inputs[0] is z)
    lines = [f"_x = {v.mat(x)}", f"_z = {v.mat(z)}"]
    body = [f"        t = _x[i, j] + {v(b)}[j]", "        _z[i, j] = t"]
    if fused is not None:   # bias + activation in one pass
        lines.append(f"_y = {v.mat(fused.out)}")
        body.append(f"        _y[i, j] = {_activation(fused.attrs['fn'], fused.attrs, 't')}")
    return lines + [f"for i in range({rows}):", f"    for j in range({cols}):"] + body


@lowering("sum_to_last")
def _sum_to_last(op: Op, v: Names, ahead):
    (x,) = op.inputs
    rows, cols = v.rows_cols(x)
    return [f"_x = {v.mat(x)}"] + _zero(v(op.out), cols) + [
            f"for i in range({rows}):", f"    for j in range({cols}):",
            f"        {v(op.out)}[j] += _x[i, j]"]


# ---------------------------------------------------------------- structure

@lowering("reshape")
def _reshape(op: Op, v: Names, ahead):
    shape = ", ".join(v.dim(d) for d in op.out.shape)
    return [f"{v(op.out)} = {v(op.inputs[0])}.reshape(({shape},))"]


@lowering("add")
def _add(op: Op, v: Names, ahead):
    size = v.size(op.out)
    lines = [f"_o = {v.flat(op.out)}"] + [f"_a{i} = {v.flat(x)}" for i, x in enumerate(op.inputs)]
    total = " + ".join(f"_a{i}[i]" for i in range(len(op.inputs)))
    return lines + [f"for i in range({size}):", f"    _o[i] = {total}"]


@lowering("mul")
def _mul(op: Op, v: Names, ahead):
    a, b = op.inputs
    return [f"_o = {v.flat(op.out)}", f"_a = {v.flat(a)}", f"_b = {v.flat(b)}",
            f"for i in range({v.size(op.out)}):", "    _o[i] = _a[i] * _b[i]"]


def _outer_inner(value: Value, axis: int, names: Names) -> tuple[str, int]:
    outer = [names.dim(d) for d in value.shape[:axis]]
    inner = 1
    for d in value.shape[axis + 1:]:
        inner *= int(d)
    return " * ".join(outer) if outer else "1", inner


@lowering("concat")
def _concat(op: Op, v: Names, ahead):
    axis = op.attrs["axis"]
    out = op.out
    outer, inner = _outer_inner(out, axis, v)
    width = int(out.shape[axis]) * inner
    lines = [f"_o = {v(out)}.reshape(({outer}, {width}))"]
    offset = 0
    for x in op.inputs:
        part = int(x.shape[axis]) * inner
        lines += [f"_x = {v(x)}.reshape(({outer}, {part}))",
                  f"for i in range({outer}):",
                  f"    for j in range({part}):",
                  f"        _o[i, {offset} + j] = _x[i, j]"]
        offset += part
    return lines


@lowering("slice")
def _slice(op: Op, v: Names, ahead):
    (x,) = op.inputs
    axis, start = op.attrs["axis"], op.attrs["start"]
    outer, inner = _outer_inner(x, axis, v)
    width = int(x.shape[axis]) * inner
    part = int(op.out.shape[axis]) * inner
    return [f"_x = {v(x)}.reshape(({outer}, {width}))",
            f"_o = {v(op.out)}.reshape(({outer}, {part}))",
            f"for i in range({outer}):",
            f"    for j in range({part}):",
            f"        _o[i, j] = _x[i, {start * inner} + j]"]


@lowering("dropout")
def _dropout(op: Op, v: Names, ahead):
    x, step = op.inputs
    y, mask = op.outputs
    rate = float(op.attrs["rate"])
    return [f"_x = {v.flat(x)}", f"_y = {v.flat(y)}", f"_m = {v.flat(mask)}",
            f"for i in range({v.size(x)}):",
            f"    keep = f32(1.0) if dropout_uniform({int(op.attrs['seed'])}, {v(step)}, i) >= {rate!r} else f32(0.0)",
            f"    _m[i] = keep / {f32(1.0 - rate)}",
            "    _y[i] = _x[i] * _m[i]"]


# ---------------------------------------------------------------- activations

@lowering("act")
def _act(op: Op, v: Names, ahead):
    (x,) = op.inputs
    return [f"_x = {v.flat(x)}", f"_y = {v.flat(op.out)}",
            f"for i in range({v.size(x)}):",
            f"    _y[i] = {_activation(op.attrs['fn'], op.attrs, '_x[i]')}"]


@lowering("act_grad")
def _act_grad(op: Op, v: Names, ahead):
    g, x, y = op.inputs
    rows, cols = v.rows_cols(x)
    out = op.out
    bias = ahead(lambda nxt: nxt.prim == "sum_to_last" and nxt.inputs[0] is out)
    deriv = _activation(op.attrs["fn"], op.attrs, "_x[i, j]", "_y[i, j]", derivative=True)
    lines = [f"_g = {v.mat(g)}", f"_x = {v.mat(x)}", f"_y = {v.mat(y)}", f"_o = {v.mat(out)}"]
    body = [f"        t = _g[i, j] * ({deriv})", "        _o[i, j] = t"]
    if bias is not None:   # the bias gradient accumulates in the same pass
        lines += _zero(v(bias.out), cols)
        body.append(f"        {v(bias.out)}[j] += t")
    return lines + [f"for i in range({rows}):", f"    for j in range({cols}):"] + body


@lowering("softmax", "log_softmax")
def _softmax(op: Op, v: Names, ahead):
    (x,) = op.inputs
    rows, cols = v.rows_cols(x)
    t = f32(op.attrs.get("temperature", 1.0))
    head = [f"_x = {v.mat(x)}", f"_y = {v.mat(op.out)}",
            f"for i in range({rows}):",
            "    top = _x[i, 0]",
            f"    for j in range(1, {cols}):",
            "        top = max(top, _x[i, j])",
            "    total = f32(0.0)"]
    # z = x / T, as the reference divides before subtracting the max
    if op.prim == "softmax":
        return head + [f"    for j in range({cols}):",
                       f"        e = math.exp(_x[i, j] / {t} - top / {t})",
                       "        _y[i, j] = e",
                       "        total += e",
                       f"    for j in range({cols}):",
                       "        _y[i, j] = _y[i, j] / total"]
    return head + [f"    for j in range({cols}):",
                   f"        total += math.exp(_x[i, j] / {t} - top / {t})",
                   "    lse = math.log(total)",
                   f"    for j in range({cols}):",
                   f"        _y[i, j] = (_x[i, j] / {t} - top / {t}) - lse"]


@lowering("softmax_grad", "log_softmax_grad")
def _softmax_grad(op: Op, v: Names, ahead):
    g, y = op.inputs
    rows, cols = v.rows_cols(y)
    t = f32(op.attrs.get("temperature", 1.0))
    lines = [f"_g = {v.mat(g)}", f"_y = {v.mat(y)}", f"_o = {v.mat(op.out)}",
             f"for i in range({rows}):", "    s = f32(0.0)", f"    for j in range({cols}):"]
    if op.prim == "softmax_grad":
        return lines + ["        s += _g[i, j] * _y[i, j]", f"    for j in range({cols}):",
                        f"        _o[i, j] = _y[i, j] * (_g[i, j] - s) / {t}"]
    return lines + ["        s += _g[i, j]", f"    for j in range({cols}):",
                    f"        _o[i, j] = (_g[i, j] - math.exp(_y[i, j]) * s) / {t}"]


# ---------------------------------------------------------------- batch mean and constants

@lowering("mean")
def _mean(op: Op, v: Names, ahead):
    (x,) = op.inputs
    return [f"acc = 0.0", f"for i in range(n):", f"    acc += {v(x)}[i]",
            f"{v(op.out)} = f32(acc / n)"]


@lowering("mean_grad")
def _mean_grad(op: Op, v: Names, ahead):
    g, x = op.inputs
    return [f"for i in range(n):", f"    {v(op.out)}[i] = {v(g)} / f32(n)"]


@lowering("constant")
def _constant(op: Op, v: Names, ahead):
    return [f"{v(op.out)} = {f32(op.attrs['value'])}"]


# ---------------------------------------------------------------- formulas
# Losses, metrics, their gradients and optimizer updates: calls of the kernels that
# cpu_formulas generates from the catalog's formulas (and sum_squares, for clipping).

def _formula(op: Op, v: Names, ahead):
    return lower_call(op, v)


for _prim in PRIMITIVES.values():
    if _prim.kind in FORMULA_KINDS or _prim.name == "sum_squares":
        LOWERINGS[_prim.name] = _formula
