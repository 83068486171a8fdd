"""The per-primitive lowering rules of the `cuda` target: how each primitive of
the IR becomes kernel source, and `LOWERINGS`, the table the planner reads.

An elementwise lowering `emit(k, op, get, at)` returns (statements, {value id:
expression}) for one element (`get(v)` reads an input there, `at` says where);
the planner chains them into a matmul's epilogue or an elementwise kernel. A row
lowering `emit(rb, op)` writes through a `cuda_emit.RowBuilder`: softmax and
log-softmax with their gradients and the batch mean with its gradient are here,
the losses, metrics and optimizers are in `cuda_formulas`. Activations come from
`expr.to_scalar_source`, so a new activation needs no change here.
"""
from __future__ import annotations

import ast as pyast
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from modelc.compiler import elementwise
from modelc.compiler.codegen.cuda_emit import RowBuilder, last_index
from modelc.compiler.codegen.cuda_formulas import ROW_LOWERINGS, UPDATES
from modelc.compiler.codegen.cuda_inline import inline_helpers
from modelc.compiler.codegen.cuda_norm import NORM_ELEMENTWISE, NORM_ROWS, NORM_STAGED
from modelc.compiler.codegen.cuda_plan import CudaCodegenError, lit
from modelc.compiler.expr import to_scalar_source
from modelc.compiler.ir import Op


def _expr_names(expression: str) -> set[str]:
    return {n.id for n in pyast.walk(pyast.parse(expression, mode="eval")) if isinstance(n, pyast.Name)}


# ---------------------------------------------------------------- elementwise lowerings
# Each returns (statements, {value id: expression}); `get(v)` reads an input at the element.

def _ew_bias_add(k, op, get, at):
    x, b = op.inputs
    return [], {op.out.id: f"{get(x)} + {k.ref(b, '0', last_index(k, x, at))}"}


def _act_names(op, fn, bound: dict):
    names = dict(bound)
    for p, default in fn.params.items():
        names[p] = lit(op.attrs.get(p, default))
    return names


def _ew_act(k, op, get, at):
    fn = elementwise.resolve(op.attrs["fn"])
    xv = k.tmp("x")
    expr = to_scalar_source(fn.forward, _act_names(op, fn, {"x": xv}), "f32")
    lines, expr = inline_helpers(k, expr)
    return [f"{xv} = {get(op.inputs[0])}"] + lines, {op.out.id: expr}


def _ew_act_grad(k, op, get, at):
    g, x, y = op.inputs
    fn = elementwise.resolve(op.attrs["fn"])
    used = _expr_names(fn.derivative)
    lines, bound = [], {}
    for name, value in (("x", x), ("y", y)):
        if name in used:
            var = k.tmp(name)
            lines.append(f"{var} = {get(value)}")
            bound[name] = var
    expr = to_scalar_source(fn.derivative, _act_names(op, fn, bound), "f32")
    more, expr = inline_helpers(k, expr)
    return lines + more, {op.out.id: f"{get(g)} * ({expr})"}


def _ew_add(k, op, get, at):
    return [], {op.out.id: " + ".join(get(v) for v in op.inputs)}


def _ew_mul(k, op, get, at):
    a, b = op.inputs
    return [], {op.out.id: f"{get(a)} * {get(b)}"}


def _ew_copy(k, op, get, at):
    return [], {op.out.id: get(op.inputs[0])}


_M32 = 0xFFFFFFFF


def _ew_dropout(k, op, get, at):
    """The counter hash of `primitives.dropout_uniform` in uint64 arithmetic masked
    to 32 bits (numpy wraps the same way), compared as an integer against
    ceil(rate * 2^32): exactly the float64 test `h / 2^32 >= rate`."""
    x = op.inputs[0]
    rate, seed = float(op.attrs["rate"]), int(op.attrs["seed"])
    seed_term = ((seed & _M32) * 0x9E3779B1) & _M32
    thresh = math.ceil(rate * 4294967296.0)
    scale = np.float32(1.0) / np.float32(1.0 - rate)      # the layer's rate is below 1
    step = k.scalar("step")
    h, xv, mask = k.tmp("h"), k.tmp("x"), k.tmp("mask")
    lines = [
        f"{h} = (u64({seed_term}) + u64({step} & {_M32}) * u64({0x85EBCA77}) + u64({at.flat})) & u64({_M32})",
        f"{h} ^= {h} >> u64(16)",
        f"{h} = ({h} * u64({0x7FEB352D})) & u64({_M32})",
        f"{h} ^= {h} >> u64(15)",
        f"{h} = ({h} * u64({0x846CA68B})) & u64({_M32})",
        f"{h} ^= {h} >> u64(16)",
        f"{mask} = {lit(scale)} if {h} >= u64({thresh}) else f32(0.0)",
        f"{xv} = {get(x)}",
    ]
    return lines, {op.outputs[0].id: f"{xv} * {mask}", op.outputs[1].id: mask}


# ---------------------------------------------------------------- row lowerings

def _row_softmax(rb: RowBuilder, op: Op):
    t = op.attrs.get("temperature", 1.0)
    expr = rb.softmax(op.inputs[0], t)
    rb.loop([rb.store(op.out, expr)])
    rb.stored_softmax(op.inputs[0], t, op.out)


def _row_log_softmax(rb: RowBuilder, op: Op):
    t = op.attrs.get("temperature", 1.0)
    x = op.inputs[0]
    mx, se = rb.stats(x, t)
    lse = rb.scalar(f"math.log({se})")
    rb.loop([rb.store(op.out, f"({rb.x(x)} / {lit(t)} - {mx}) - {lse}")])


def _row_softmax_grad(rb: RowBuilder, op: Op):
    g, y = op.inputs
    t = lit(op.attrs.get("temperature", 1.0))
    s = rb.row_sum(lambda: [], f"{rb.x(g)} * {rb.x(y)}")
    yv = rb.tmp("y")
    rb.loop([f"{yv} = {rb.x(y)}", rb.store(op.out, f"{yv} * ({rb.x(g)} - {s}) / {t}")])


def _row_log_softmax_grad(rb: RowBuilder, op: Op):
    g, y = op.inputs
    t = lit(op.attrs.get("temperature", 1.0))
    s = rb.row_sum(lambda: [], rb.x(g))
    rb.loop([rb.store(op.out, f"({rb.x(g)} - math.exp({rb.x(y)}) * {s}) / {t}")])


def _row_mean(rb: RowBuilder, op: Op):
    """The batch mean: per-sample values summed on the device into a result slot."""
    slot = rb.k.p.sum_slot(op)
    rb.means.append((rb.s(op.inputs[0]), slot))


def _row_mean_grad(rb: RowBuilder, op: Op):
    g = op.inputs[0]
    const = rb.k.p.const.get(rb.k.p.base(g).id)
    if const is None:
        raise CudaCodegenError("mean_grad of a value computed on the device")
    nb = rb.k.scalar("nb")
    rb.scalars[op.out.id] = rb.init(f"{const} / f32({nb})", "g")
    if rb.k.p.stored_outside(op.out, rb.group_ids):
        rb.lines += ["if lane == 0 and valid:", "    " + rb.k.store(op.out, "r", "0", rb.scalars[op.out.id])]


# ---------------------------------------------------------------- the lowering table

@dataclass(frozen=True)
class Lowering:
    """kind: matmul | elementwise | row | colsum | sumsq | copy | update | alias | constant,
    conv | pool (`cuda_image`), staged (a column reduction, then an elementwise part:
    `cuda_norm.emit_stats`) | moving (`cuda_norm.emit_moving`)."""
    kind: str
    emit: Callable | None = None
    geometry: str = ""          # row ops: "last" (last axis) | "sample" (whole sample) | "any"


LOWERINGS: dict[str, Lowering] = {
    "matmul": Lowering("matmul"),
    "bias_add": Lowering("elementwise", _ew_bias_add),
    "act": Lowering("elementwise", _ew_act),
    "act_grad": Lowering("elementwise", _ew_act_grad),
    "add": Lowering("elementwise", _ew_add),
    "mul": Lowering("elementwise", _ew_mul),
    "dropout": Lowering("elementwise", _ew_dropout),
    "copy": Lowering("elementwise", _ew_copy),            # pseudo-op: outputs that alias inputs
    "reshape": Lowering("alias"),
    "constant": Lowering("constant"),
    "sum_to_last": Lowering("colsum"),
    "sum_squares": Lowering("sumsq"),
    "concat": Lowering("copy"),
    "slice": Lowering("copy"),
    "softmax": Lowering("row", _row_softmax, "last"),
    "log_softmax": Lowering("row", _row_log_softmax, "last"),
    "softmax_grad": Lowering("row", _row_softmax_grad, "last"),
    "log_softmax_grad": Lowering("row", _row_log_softmax_grad, "last"),
    "mean": Lowering("row", _row_mean, "any"),
    "mean_grad": Lowering("row", _row_mean_grad, "any"),
    "conv2d": Lowering("conv"),
    "conv2d_input_grad": Lowering("conv"),
    "conv2d_kernel_grad": Lowering("conv"),
    "max_pool": Lowering("pool"),
    "avg_pool": Lowering("pool"),
    "max_pool_grad": Lowering("pool"),
    "avg_pool_grad": Lowering("pool"),
    "moving_average": Lowering("moving"),
    **{prim: Lowering("staged", emit) for prim, emit in NORM_STAGED.items()},   # batch normalization
    **{prim: Lowering("elementwise", emit) for prim, emit in NORM_ELEMENTWISE.items()},
    **{prim: Lowering("row", emit, "last") for prim, emit in NORM_ROWS.items()},    # layer normalization
    **{prim: Lowering("row", emit, "sample") for prim, emit in ROW_LOWERINGS.items()},   # losses, metrics
    **{prim: Lowering("update") for prim in UPDATES},
}
