"""Kernel generation for the `cuda` target: a graph of the IR becomes Python
source for `numba.cuda` kernels plus a launch plan.

This module is pure Python (it never imports numba), so plans can be made, read
and compiled to PTX on machines without a GPU. `cuda.py` binds a plan to device
memory and launches it.

Storage: every value lives in a flat, C-contiguous device buffer (`float32[::1]`)
indexed with compile-time strides, so `reshape` is free (an alias), index
arithmetic folds to constants, and one signature shape fits every buffer. Batched
buffers hold `capacity * sample_size` elements; the batch size `nb` is a kernel
argument. Data inputs are never copied per batch: kernels read their rows
through the epoch's index (`X[idx[off + r] * S + c]`), so the gather happens in
the first matmul's tile loads and in the loss kernel's label reads.

Grouping (one kernel each):
  * matmul, 16x16 shared-memory tiles, with an epilogue chain of elementwise ops
    on its output (bias + activation; activation gradient on an incoming
    gradient) and, for `a^T @ g` weight gradients, the bias gradient
    `sum_to_last(g)` fused from the same shared-memory tiles of `g`;
  * elementwise chains that no matmul absorbed;
  * row groups: softmax / log-softmax, losses and their gradients, metrics, the
    batch mean (accumulated on the device) and its gradient, one row per group
    of lanes, reductions in shared memory;
  * column reductions (`sum_to_last` not fused), concat / slice copies;
  * the optimizer: one kernel updates every parameter.

Each primitive's lowering is one entry of `LOWERINGS`; elementwise activations
come from `elementwise.to_scalar_source`, so a new activation needs no change here.
"""
from __future__ import annotations

import ast as pyast
import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from modelc.compiler import elementwise
from modelc.compiler.ir import BATCH, I64, Graph, Op, Value, format_op
from modelc.compiler.primitives import EPSILON, learning_rate
from modelc.errors import ModelcError


class CudaCodegenError(ModelcError):
    """A graph the cuda target cannot lower (a compiler limitation, not a user mistake)."""

    def __init__(self, message: str):
        super().__init__(f"the cuda target cannot compile this model: {message}",
                         hint="use --target cpu for this model, and report it")


@dataclass(frozen=True)
class LaunchConfig:
    """Block shapes. The GPU defaults are what a real device wants; the simulator
    runs every thread as a Python thread, so it gets the same kernels with
    smaller blocks (the code paths, ragged edges and reductions are identical)."""
    tile: int = 16          # matmul tile: tile x tile threads, tile x (tile+1) shared floats per operand
    threads: int = 256      # elementwise / optimizer / copy blocks
    row_threads: int = 256  # row kernels: lanes x rows
    max_lanes: int = 32     # lanes per row (a warp per row for wide rows)
    col_lanes: int = 32     # column reductions: lanes over columns ...
    col_rows: int = 8       # ... and rows striding down the batch


GPU_CONFIG = LaunchConfig()
SIM_CONFIG = LaunchConfig(tile=4, threads=32, row_threads=16, max_lanes=4, col_lanes=4, col_rows=4)


# ---------------------------------------------------------------- small helpers

def lit(x) -> str:
    """A float32 literal: the value rounded to float32 first, then written exactly."""
    v = float(np.float32(x))
    if math.isinf(v):
        return "f32(math.inf)" if v > 0 else "f32(-math.inf)"
    return f"f32({v!r})"


def _size(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _sample(v: Value) -> int:
    """Elements per sample (batched) or in total (unbatched)."""
    return v.sample_size()


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def _ident(text: str) -> str:
    return re.sub(r"\W", "_", text)


def _expr_names(expression: str) -> set[str]:
    return {n.id for n in pyast.walk(pyast.parse(expression, mode="eval")) if isinstance(n, pyast.Name)}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------- the plan

@dataclass
class KParam:
    """A kernel argument: its name in the source, its numba type and where the host finds it.
    source: ("value", base id) | ("data", "x"|"y") | "idx" | "off" | "nb" | "step" | "sums" | ("opt", group, k)."""
    name: str
    type: str               # f32[] | i64[] | f64[] | i64 | f32
    source: object


@dataclass
class Extent:
    """A launch dimension: ceil((per_batch * nb + fixed) / div) blocks."""
    per_batch: int
    fixed: int
    div: int

    def blocks(self, nb: int) -> int:
        return max(1, _cdiv(self.per_batch * nb + self.fixed, self.div))

    def __str__(self) -> str:
        total = " + ".join(t for t in ((f"{self.per_batch}*nb" if self.per_batch else ""),
                                        (str(self.fixed) if self.fixed else "")) if t) or "0"
        return f"ceil(({total})/{self.div})"


@dataclass
class Kernel:
    name: str
    kind: str
    ops: list[Op]
    params: list[KParam]
    source: str
    grid: tuple[Extent, ...]
    block: tuple[int, ...]
    writes: set[int] = field(default_factory=set)    # base ids stored
    reads: set[int] = field(default_factory=set)

    def grid_dims(self, nb: int) -> tuple[int, ...]:
        return tuple(e.blocks(nb) for e in self.grid)

    def signature_text(self) -> str:
        names = {"f32[]": "float32[::1]", "i64[]": "int64[::1]", "f64[]": "float64[::1]",
                 "i64": "int64", "f32": "float32"}
        return "void(" + ", ".join(names[p.type] for p in self.params) + ")"

    def describe(self) -> str:
        ops = "; ".join(format_op(op).strip().split("    #")[0] for op in self.ops)
        grid = ", ".join(str(e) for e in self.grid)
        return f"{self.name} [{self.kind}] grid=({grid}) block={self.block}: {ops}"


@dataclass
class StepScalars:
    """Float32 scalars an update kernel takes per step, computed on the host from
    the step number exactly as the reference does (no device readback)."""
    prim: str
    attrs: dict

    def values(self, step: int) -> tuple:
        return UPDATES[self.prim].scalars(int(step), self.attrs)


@dataclass
class Buffer:
    value: Value
    batched: bool
    per_row: int            # elements per sample (batched) or in total
    dtype: str


@dataclass
class Plan:
    graph: Graph
    config: LaunchConfig
    gather: bool
    kernels: list[Kernel]
    buffers: dict[int, Buffer]
    alias: dict[int, Value]              # value id -> the value whose storage it shares
    data: dict[int, str]                 # base id of a data value -> "x" | "y"
    outputs: dict[str, tuple]            # key -> ("sum", slot) | ("buffer", base id)
    n_sums: int
    step_scalars: list[StepScalars]
    module_source: str

    @property
    def source_hash(self) -> str:
        return hashlib.sha256(self.module_source.encode()).hexdigest()[:20]

    def describe(self) -> str:
        return "\n".join(k.describe() for k in self.kernels)


# ---------------------------------------------------------------- kernel builder

class _Kernel:
    """Collects one kernel's parameters and body while lowerings emit source."""

    def __init__(self, planner: "_Planner", name: str, kind: str, ops: list[Op]):
        self.p = planner
        self.name, self.kind, self.ops = name, kind, ops
        self.params: list[KParam] = []
        self._by_source: dict = {}
        self.reads: set[int] = set()
        self.writes: set[int] = set()
        self._tmp = 0

    def tmp(self, prefix="v") -> str:
        self._tmp += 1
        return f"{prefix}{self._tmp}"

    def param(self, source, type_: str, hint: str) -> str:
        if source in self._by_source:
            return self._by_source[source]
        name = hint
        taken = {p.name for p in self.params}
        k = 1
        while name in taken:
            k += 1
            name = f"{hint}_{k}"
        self.params.append(KParam(name, type_, source))
        self._by_source[source] = name
        return name

    def scalar(self, which: str) -> str:
        types = {"off": "i64", "nb": "i64", "step": "i64", "idx": "i64[]", "sums": "f64[]"}
        return self.param(which, types[which], which)

    def array(self, value: Value, write: bool = False) -> str:
        """The buffer parameter holding `value` (resolved through aliases)."""
        base = self.p.base(value)
        role = self.p.data.get(base.id)
        if role is not None:
            if write:
                raise CudaCodegenError(f"a kernel would write the data input {base.name}")
            return self.param(("data", role), "i64[]" if base.dtype == I64 else "f32[]", f"d_{_ident(base.name)}")
        (self.writes if write else self.reads).add(base.id)
        prefix = {"param": "p_", "state": "s_"}.get(base.role, "t_")
        return self.param(("value", base.id), "i64[]" if base.dtype == I64 else "f32[]",
                          prefix + _ident(base.name))

    def dim(self, d) -> str:
        return self.scalar("nb") if d == BATCH else str(d)

    def row_base(self, value: Value, r: str) -> str:
        """Index of element 0 of row `r` (a batch row for batched values)."""
        base = self.p.base(value)
        s = _sample(base)
        role = self.p.data.get(base.id)
        if role is not None:
            off = self.scalar("off")
            row = f"{self.scalar('idx')}[{off} + {r}]" if self.p.gather else f"({off} + {r})"
            return f"{row} * {s}" if s != 1 else row
        return f"({r}) * {s}" if s != 1 else f"({r})"

    def ref(self, value: Value, r: str, c: str) -> str:
        """Read element c of sample r (batched) or flat element c (unbatched)."""
        const = self.p.const.get(self.p.base(value).id)
        if const is not None:
            return const
        arr = self.array(value)
        if not self.p.base(value).batched:
            return f"{arr}[{c}]"
        return f"{arr}[{self.row_base(value, r)} + {c}]" if c != "0" else f"{arr}[{self.row_base(value, r)}]"

    def ref2(self, value: Value, i: str, j: str) -> str:
        """Element (i, j) of a 2-D value as stored."""
        base = self.p.base(value)
        if base.batched:
            return self.ref(value, i, j)
        return f"{self.array(value)}[({i}) * {base.shape[-1]} + {j}]"

    def store(self, value: Value, r: str, c: str, expr: str) -> str:
        arr = self.array(value, write=True)
        base = self.p.base(value)
        if not base.batched:
            return f"{arr}[{c}] = {expr}"
        s = _sample(base)
        return f"{arr}[({r}) * {s} + {c}] = {expr}" if s != 1 else f"{arr}[{r}] = {expr}"

    def finish(self, body: list[str], grid, block, doc: str) -> Kernel:
        args = ", ".join(p.name for p in self.params)
        lines = [f"def {self.name}({args}):", f'    """{doc}"""']
        lines += ["    " + line if line else "" for line in body]
        return Kernel(self.name, self.kind, self.ops, self.params, "\n".join(lines) + "\n",
                      tuple(grid), tuple(block), set(self.writes), set(self.reads))


def _indent(lines: list[str], n: int = 1) -> list[str]:
    return ["    " * n + line for line in lines]


@dataclass
class _At:
    """Where an elementwise chain is evaluated: sample r, in-sample index c (or flat c
    for unbatched values), and the flat index into the whole batch tensor."""
    r: str
    c: str
    flat: str


# ---------------------------------------------------------------- scalar helpers, inlined
# numba.cuda compiles a device function for the *current* device's compute
# capability when a kernel calls it, so kernels that call one cannot be compiled
# to PTX on a machine without a GPU. The helpers of `elementwise` (sigmoid_scalar)
# are therefore inlined as statements: arguments bound to fresh variables,
# locals renamed, `if ...: return` turned into if/else assigning the result.

_HELPERS = {f.name: f for f in pyast.parse(elementwise.SCALAR_HELPERS_SOURCE).body
            if isinstance(f, pyast.FunctionDef)}


class _Rename(pyast.NodeTransformer):
    def __init__(self, names: dict[str, str]):
        self.names = names

    def visit_Name(self, node):
        if node.id in self.names:
            return pyast.copy_location(pyast.Name(id=self.names[node.id], ctx=node.ctx), node)
        return node


def _sub(node, names) -> str:
    import copy
    return pyast.unparse(_Rename(names).visit(copy.deepcopy(node)))


def _returns(stmts) -> bool:
    last = stmts[-1] if stmts else None
    return isinstance(last, pyast.Return) or (isinstance(last, pyast.If) and _returns(last.body)
                                              and _returns(last.orelse))


def _inline_body(stmts, names: dict[str, str], result: str) -> list[str]:
    out: list[str] = []
    for i, st in enumerate(stmts):
        if isinstance(st, pyast.Return):
            out.append(f"{result} = {_sub(st.value, names)}")
            return out
        if isinstance(st, pyast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], pyast.Name):
            out.append(f"{names[st.targets[0].id]} = {_sub(st.value, names)}")
        elif isinstance(st, pyast.If):
            then = _inline_body(st.body, names, result)
            if _returns(st.body):
                rest = _inline_body(list(st.orelse) + list(stmts[i + 1:]), names, result)
                return out + [f"if {_sub(st.test, names)}:"] + _indent(then) + ["else:"] + _indent(rest)
            other = _inline_body(st.orelse, names, result) if st.orelse else ["pass"]
            out += [f"if {_sub(st.test, names)}:"] + _indent(then) + ["else:"] + _indent(other)
        else:
            raise CudaCodegenError(f"cannot inline a '{type(st).__name__}' statement of a scalar helper")
    return out


def inline_helpers(k: "_Kernel", expr: str) -> tuple[list[str], str]:
    """(statements, expression) for a scalar expression that may call helpers."""
    lines: list[str] = []

    class _Inline(pyast.NodeTransformer):
        def visit_Call(self, node):
            self.generic_visit(node)
            if isinstance(node.func, pyast.Name) and node.func.id in _HELPERS:
                fn = _HELPERS[node.func.id]
                names = {}
                for param, arg in zip(fn.args.args, node.args):
                    names[param.arg] = k.tmp("h" + param.arg)
                    lines.append(f"{names[param.arg]} = {pyast.unparse(arg)}")
                for sub in pyast.walk(fn):
                    if isinstance(sub, pyast.Name) and isinstance(sub.ctx, pyast.Store) and sub.id not in names:
                        names[sub.id] = k.tmp("h" + sub.id)
                result = k.tmp("h")
                lines.extend(_inline_body(fn.body, names, result))
                return pyast.Name(id=result, ctx=pyast.Load())
            return node

    tree = _Inline().visit(pyast.parse(expr, mode="eval"))
    return lines, pyast.unparse(tree)


# ---------------------------------------------------------------- elementwise lowerings
# Each returns (statements, {value id: expression}); `get(v)` reads an input at the element.

def _ew_bias_add(k, op, get, at):
    x, b = op.inputs
    last = x.shape[-1]
    base = k.p.base(x)
    whole_row = (base.batched and x.rank == 2) or (not base.batched and x.rank == 1)
    col = at.c if whole_row else f"({at.c}) % {last}"
    return [], {op.out.id: f"{get(x)} + {k.ref(b, '0', col)}"}


def _act_names(k, op, fn, bound: dict):
    names = dict(bound)
    for p, default in fn.params.items():
        names[p] = lit(op.attrs.get(p, default))
    return names


def _ew_act(k, op, get, at):
    fn = elementwise.resolve(op.attrs["fn"])
    xv = k.tmp("x")
    expr = elementwise.to_scalar_source(fn.forward, _act_names(k, op, fn, {"x": xv}), "f32")
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
    expr = elementwise.to_scalar_source(fn.derivative, _act_names(k, op, fn, bound), "f32")
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
    scale = np.float32(1.0) / np.float32(1.0 - rate) if rate < 1 else np.float32(np.inf)
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

class _Row:
    """Emission state of a row kernel: lanes stride over the columns of one row
    (c = lane, lane + L, ...), so each lane re-reads only what it wrote itself;
    reductions go through double-buffered shared memory (one barrier each) and
    leave the row's result in every lane. Per-row scalars are computed as
    `expr if valid else 0` so rows past the batch never evaluate a log of junk
    and still reach every barrier."""

    def __init__(self, k: _Kernel, group_ops: list[Op], rps: int, cols: int, lanes: int, rows: int):
        self.k, self.rps, self.C, self.L, self.R = k, rps, cols, lanes, rows
        self.group_ids = {id(op) for op in group_ops}
        self.lines: list[str] = []
        self.memo: dict = {}
        self.scalars: dict[int, str] = {}
        self.means: list[tuple[str, int]] = []     # (variable, sums slot)
        self.flip = 0
        self.uses_red = self.uses_redi = False

    # reading
    def x(self, v: Value, c: str = "c") -> str:
        if self.rps == 1:
            return self.k.ref(v, "r", c)
        return self.k.ref(v, "rs", f"ro + {c}")

    def s(self, v: Value) -> str:
        base = self.k.p.base(v)
        if base.id in self.scalars:
            return self.scalars[base.id]
        const = self.k.p.const.get(base.id)
        if const is not None:
            return const
        zero = "0" if base.dtype == I64 else "f32(0.0)"
        self.scalars[base.id] = self.scalar(self.k.ref(v, "r", "0"), zero)   # loaded once per row
        return self.scalars[base.id]

    # emitting
    def scalar(self, expr: str, zero: str = "f32(0.0)") -> str:
        var = self.k.tmp("s")
        self.lines.append(f"{var} = ({expr}) if valid else {zero}")
        return var

    def init(self, expr: str, prefix="a") -> str:
        var = self.k.tmp(prefix)
        self.lines.append(f"{var} = {expr}")
        return var

    def loop(self, body: list[str]):
        self.lines.append(f"for c in range(lane, cend, {self.L}):")
        self.lines += _indent(body)

    def reduce(self, var: str, how: str) -> str:
        self.uses_red = True
        b = self.flip
        self.flip ^= 1
        out = self.k.tmp("r")
        self.lines += [f"red[{b}, w, lane] = {var}", "cuda.syncthreads()", f"{out} = red[{b}, w, 0]",
                       f"for q in range(1, {self.L}):"]
        self.lines.append(f"    {out} = max({out}, red[{b}, w, q])" if how == "max"
                          else f"    {out} += red[{b}, w, q]")
        return out

    def argmax(self, v: Value) -> str:
        """Index of the first largest element of the row, as numpy's argmax."""
        self.uses_red = self.uses_redi = True
        bv, bi = self.init("f32(-math.inf)", "bv"), self.init(str(self.C), "bi")
        t = self.k.tmp("t")
        self.loop([f"{t} = {self.x(v)}", f"if {t} > {bv} or {bi} == {self.C}:",
                   f"    {bv} = {t}", f"    {bi} = c"])
        b = self.flip
        self.flip ^= 1
        ov, oi = self.k.tmp("bv"), self.k.tmp("bi")
        self.lines += [f"red[{b}, w, lane] = {bv}", f"redi[{b}, w, lane] = {bi}", "cuda.syncthreads()",
                       f"{ov} = red[{b}, w, 0]", f"{oi} = redi[{b}, w, 0]",
                       f"for q in range(1, {self.L}):",
                       f"    if red[{b}, w, q] > {ov} or (red[{b}, w, q] == {ov} and redi[{b}, w, q] < {oi}):",
                       f"        {ov} = red[{b}, w, q]", f"        {oi} = redi[{b}, w, q]"]
        return oi

    def row_sum(self, expr_of_c: Callable[[], list[str]], value_expr: str) -> str:
        acc = self.init("f32(0.0)")
        self.loop(expr_of_c() + [f"{acc} += {value_expr}"])
        return self.reduce(acc, "sum")

    def store(self, v: Value, expr: str) -> str:
        k = self.k
        arr = k.array(v, write=True)
        return f"{arr}[r * {self.C} + c] = {expr}" if self.C != 1 else f"{arr}[r] = {expr}"

    def set_scalar(self, v: Value, var: str):
        self.scalars[v.id] = var
        if self.k.p.stored_outside(v, self.group_ids):
            self.lines.append("if lane == 0 and valid:")
            self.lines.append("    " + self.k.store(v, "r", "0", var))

    def stats(self, v: Value, temperature) -> tuple[str, str]:
        """max and sum of exp over the row of v / T (shared by softmax, log-softmax and
        the fused cross-entropies on the same logits)."""
        key = ("stats", self.k.p.base(v).id, float(temperature))
        if key not in self.memo:
            t = lit(temperature)
            mx = self.init("f32(-math.inf)", "mx")
            self.loop([f"{mx} = max({mx}, {self.x(v)} / {t})"])
            mx = self.reduce(mx, "max")
            se = self.init("f32(0.0)", "se")
            self.loop([f"{se} += math.exp({self.x(v)} / {t} - {mx})"])
            se = self.reduce(se, "sum")
            self.memo[key] = (mx, se)
        return self.memo[key]


def _softmax_value(rb: _Row, v: Value, temperature) -> str:
    """softmax(v / T) at column c: re-read if this kernel already stored it (each
    lane reads back only what it wrote), else recomputed from the row's stats."""
    stored = rb.memo.get(("softmax", rb.k.p.base(v).id, float(temperature)))
    if stored is not None:
        return rb.x(stored)
    mx, se = rb.stats(v, temperature)
    return f"math.exp({rb.x(v)} / {lit(temperature)} - {mx}) / {se}"


def _row_softmax(rb: _Row, op: Op):
    t = op.attrs.get("temperature", 1.0)
    expr = _softmax_value(rb, op.inputs[0], t)
    rb.loop([rb.store(op.out, expr)])
    rb.memo[("softmax", rb.k.p.base(op.inputs[0]).id, float(t))] = op.out


def _row_log_softmax(rb: _Row, op: Op):
    t = op.attrs.get("temperature", 1.0)
    x = op.inputs[0]
    mx, se = rb.stats(x, t)
    lse = rb.scalar(f"math.log({se})")
    rb.loop([rb.store(op.out, f"({rb.x(x)} / {lit(t)} - {mx}) - {lse}")])


def _row_softmax_grad(rb: _Row, op: Op):
    g, y = op.inputs
    t = lit(op.attrs.get("temperature", 1.0))
    s = rb.row_sum(lambda: [], f"{rb.x(g)} * {rb.x(y)}")
    yv = rb.k.tmp("y")
    rb.loop([f"{yv} = {rb.x(y)}", rb.store(op.out, f"{yv} * ({rb.x(g)} - {s}) / {t}")])


def _row_log_softmax_grad(rb: _Row, op: Op):
    g, y = op.inputs
    t = lit(op.attrs.get("temperature", 1.0))
    s = rb.row_sum(lambda: [], rb.x(g))
    rb.loop([rb.store(op.out, f"({rb.x(g)} - math.exp({rb.x(y)}) * {s}) / {t}")])


def _count(rb: _Row) -> str:
    return lit(float(rb.C))


def _per_sample_loss(rb: _Row, op: Op, term: Callable[[str, str], tuple[list[str], str]], mean: bool):
    """sum (or mean) over the sample of term(y_c, p_c)."""
    y, p = op.inputs[0], op.inputs[1]
    yv, pv = rb.k.tmp("y"), rb.k.tmp("p")
    pre, value = term(yv, pv)
    total = rb.row_sum(lambda: [f"{yv} = {rb.x(y)}", f"{pv} = {rb.x(p)}"] + pre, value)
    rb.set_scalar(op.out, rb.scalar(f"{total} / {_count(rb)}" if mean else total))


def _loss_grad(rb: _Row, op: Op, term: Callable[[str, str, str], tuple[list[str], str]]):
    """out_c = term(y_c, p_c, g) for a per-sample gradient g."""
    y, p, g = op.inputs
    gv = rb.s(g)
    yv, pv = rb.k.tmp("y"), rb.k.tmp("p")
    pre, value = term(yv, pv, gv)
    rb.loop([f"{yv} = {rb.x(y)}", f"{pv} = {rb.x(p)}"] + pre + [rb.store(op.out, value)])


_EPS = lit(EPSILON)
_ONE_EPS = lit(1 - EPSILON)


def _clip(v: str, lo: str, hi: str) -> str:
    return f"min(max({v}, {lo}), {hi})"


def _row_mse(rb, op):
    _per_sample_loss(rb, op, lambda y, p: ([], f"({p} - {y}) * ({p} - {y})"), True)


def _row_mse_grad(rb, op):
    _loss_grad(rb, op, lambda y, p, g: ([], f"{g} * f32(2.0) * ({p} - {y}) / {_count(rb)}"))


def _sign(d: str) -> str:
    return f"(f32(1.0) if {d} > f32(0.0) else (f32(-1.0) if {d} < f32(0.0) else f32(0.0)))"


def _row_mae(rb, op):
    _per_sample_loss(rb, op, lambda y, p: ([], f"abs({p} - {y})"), True)


def _row_mae_grad(rb, op):
    _loss_grad(rb, op, lambda y, p, g: ([], f"{g} * {_sign(f'({p} - {y})')} / {_count(rb)}"))


def _row_huber(rb, op):
    d = lit(op.attrs.get("delta", 1.0))
    e = rb.k.tmp("e")
    _per_sample_loss(rb, op, lambda y, p: (
        [f"{e} = abs({p} - {y})"],
        f"(f32(0.5) * {e} * {e} if {e} <= {d} else {d} * {e} - f32(0.5) * {d} * {d})"), True)


def _row_huber_grad(rb, op):
    d = lit(op.attrs.get("delta", 1.0))
    _loss_grad(rb, op, lambda y, p, g: ([], f"{g} * {_clip(f'({p} - {y})', f'-{d}', d)} / {_count(rb)}"))


def _smooth_binary(y: str, ls: float) -> str:
    return f"({y} * {lit(1 - ls)} + {lit(0.5 * ls)})" if ls else y


def _row_bce(rb, op):
    ls = op.attrs.get("label_smoothing", 0.0)
    q = rb.k.tmp("q")
    if op.attrs.get("from_logits"):
        term = lambda y, p: ([], f"(max({p}, f32(0.0)) - {p} * {_smooth_binary(y, ls)} "
                                 f"+ math.log1p(math.exp(-abs({p}))))")
    else:
        def term(y, p):
            ys = _smooth_binary(y, ls)
            return ([f"{q} = {_clip(p, _EPS, _ONE_EPS)}"],    # Keras: epsilon inside the logs too
                    f"-({ys} * math.log({q} + {_EPS}) + (f32(1.0) - {ys}) * math.log(f32(1.0) - {q} + {_EPS}))")
    _per_sample_loss(rb, op, term, True)


def _row_bce_grad(rb, op):
    ls = op.attrs.get("label_smoothing", 0.0)
    q, d = rb.k.tmp("q"), rb.k.tmp("d")
    if op.attrs.get("from_logits"):
        def term(y, p, g):
            lines, sig = inline_helpers(rb.k, f"sigmoid_scalar({p})")
            return lines + [f"{d} = {sig} - {_smooth_binary(y, ls)}"], f"{g} * {d} / {_count(rb)}"
    else:
        def term(y, p, g):
            ys = _smooth_binary(y, ls)
            return ([f"{q} = {_clip(p, _EPS, _ONE_EPS)}",
                     f"{d} = (f32(1.0) - {ys}) / (f32(1.0) - {q} + {_EPS}) - {ys} / ({q} + {_EPS}) "
                     f"if {p} > {_EPS} and {p} < {_ONE_EPS} else f32(0.0)"], f"{g} * {d} / {_count(rb)}")
    _loss_grad(rb, op, term)


def _categorical_target(rb: _Row, op: Op, sparse: bool) -> tuple[Callable[[], str], str | None]:
    """The (smoothed) one-hot target at column c, and for sparse labels the label variable."""
    if sparse:
        lab = rb.s(op.inputs[0])
        return (lambda: f"(f32(1.0) if c == {lab} else f32(0.0))"), lab
    ls = op.attrs.get("label_smoothing", 0.0)
    y = op.inputs[0]
    if ls:
        return (lambda: f"({rb.x(y)} * {lit(1 - ls)} + {lit(ls / rb.C)})"), None
    return (lambda: rb.x(y)), None


def _row_cce(rb, op, sparse=False):
    p = op.inputs[1]
    t = op.attrs.get("temperature", 1.0)
    target, lab = _categorical_target(rb, op, sparse)
    if op.attrs.get("from_logits"):
        mx, se = rb.stats(p, t)
        lse = rb.scalar(f"math.log({se})")
        if sparse:   # -(onehot . log_softmax) is minus the label's log-probability
            pl = f"{rb.k.ref(p, 'r', lab)} / {lit(t)}"
            loss = rb.scalar(f"-(({pl} - {mx}) - {lse}) if {lab} >= 0 and {lab} < {rb.C} else f32(0.0)")
        else:
            total = rb.row_sum(lambda: [], f"{target()} * (({rb.x(p)} / {lit(t)} - {mx}) - {lse})")
            loss = rb.scalar(f"-{total}")
    else:
        s = rb.row_sum(lambda: [], rb.x(p))
        if sparse:
            q = _clip(f"{rb.k.ref(p, 'r', lab)} / {s}", _EPS, _ONE_EPS)
            loss = rb.scalar(f"-math.log({q}) if {lab} >= 0 and {lab} < {rb.C} else f32(0.0)")
        else:
            q = _clip(f"{rb.x(p)} / {s}", _EPS, _ONE_EPS)
            total = rb.row_sum(lambda: [], f"{target()} * math.log({q})")
            loss = rb.scalar(f"-{total}")
    rb.set_scalar(op.out, loss)


def _row_cce_grad(rb, op, sparse=False):
    p, g = op.inputs[1], op.inputs[2]
    t = op.attrs.get("temperature", 1.0)
    gv = rb.s(g)
    target, _ = _categorical_target(rb, op, sparse)
    if op.attrs.get("from_logits"):
        ysum = "f32(1.0)" if sparse else rb.row_sum(lambda: [], target())
        sm = _softmax_value(rb, p, t)
        rb.loop([rb.store(op.out, f"{gv} * (({sm}) * {ysum} - {target()}) / {lit(t)}")])
        return
    s = rb.row_sum(lambda: [], rb.x(p))
    q, dq = rb.k.tmp("q"), rb.k.tmp("dq")
    body = [f"{q} = {rb.x(p)} / {s}",
            f"{dq} = -{target()} / {_clip(q, _EPS, 'f32(1.0)')} if {q} > {_EPS} and {q} < {_ONE_EPS} "
            f"else f32(0.0)"]
    dot = rb.row_sum(lambda: body, f"{dq} * {q}")
    rb.loop(body + [rb.store(op.out, f"{gv} * ({dq} - {dot}) / {s}")])


def _row_kld(rb, op):
    yc = rb.k.tmp("yc")
    _per_sample_loss(rb, op, lambda y, p: (
        [f"{yc} = {_clip(y, _EPS, 'f32(1.0)')}"],
        f"{yc} * math.log({yc} / {_clip(p, _EPS, 'f32(1.0)')})"), False)


def _row_kld_grad(rb, op):
    _loss_grad(rb, op, lambda y, p, g: (
        [], f"{g} * (-{_clip(y, _EPS, 'f32(1.0)')} / {_clip(p, _EPS, 'f32(1.0)')} "
            f"if {p} > {_EPS} and {p} < f32(1.0) else f32(0.0))"))


def _row_sparse_accuracy(rb, op):
    lab = rb.s(op.inputs[0])
    best = rb.argmax(op.inputs[1])
    rb.set_scalar(op.out, rb.scalar(f"f32(1.0) if {best} == {lab} else f32(0.0)"))


def _row_categorical_accuracy(rb, op):
    a = rb.argmax(op.inputs[1])
    b = rb.argmax(op.inputs[0])
    rb.set_scalar(op.out, rb.scalar(f"f32(1.0) if {a} == {b} else f32(0.0)"))


def _row_binary_accuracy(rb, op):
    thr = lit(op.attrs.get("threshold", 0.5))
    _per_sample_loss(rb, op, lambda y, p: (
        [], f"(f32(1.0) if (f32(1.0) if {p} > {thr} else f32(0.0)) == {y} else f32(0.0))"), True)


def _row_mean(rb, op):
    slot = rb.k.p.sum_slot(op)
    rb.means.append((rb.s(op.inputs[0]), slot))


def _row_mean_grad(rb, op):
    g = op.inputs[0]
    const = rb.k.p.const.get(rb.k.p.base(g).id)
    if const is None:
        raise CudaCodegenError("mean_grad of a value computed on the device")
    nb = rb.k.scalar("nb")
    rb.scalars[op.out.id] = rb.init(f"{const} / f32({nb})", "g")
    if rb.k.p.stored_outside(op.out, rb.group_ids):
        rb.lines += ["if lane == 0 and valid:", "    " + rb.k.store(op.out, "r", "0", rb.scalars[op.out.id])]


# ---------------------------------------------------------------- optimizer lowerings

@dataclass(frozen=True)
class UpdateLowering:
    """One optimizer: the statements updating element j of a parameter and its
    state (`lines(attrs, n)`, n naming the arrays, the index and the per-step
    scalars), the names of its per-step float32 scalars, and how the host
    computes them. The order of operations is the reference's, so float32
    rounding matches."""
    lines: Callable[[dict, dict], list[str]]
    scalar_names: tuple[str, ...]
    scalars: Callable[[int, dict], tuple]


def _sched(step, attrs):
    return learning_rate(step, attrs["lr"], tuple(attrs.get("schedule", ("constant",))))


def _sgd_lines(a, n):
    m = float(a.get("momentum", 0.0))
    body = ["gj = {g}[{j}]"]
    if m:
        body += [f"vj = {{s0}}[{{j}}] * {lit(m)}", "vj = vj - {lr} * gj", "{s0}[{j}] = vj"]
        body += [f"{{w}}[{{j}}] = {{w}}[{{j}}] + ({lit(m)} * vj - {{lr}} * gj)" if a.get("nesterov")
                 else "{w}[{j}] = {w}[{j}] + vj"]
    else:
        body += ["{w}[{j}] = {w}[{j}] - {lr} * gj"]
    return [b.format(**n) for b in body]


def _adam_lines(a, n, decay=False):
    b1, b2, eps = a.get("beta_1", 0.9), a.get("beta_2", 0.999), a.get("epsilon", 1e-7)
    body = ["{w}[{j}] = {w}[{j}] - {w}[{j}] * {decay}"] if decay else []
    body += ["gj = {g}[{j}]",
             f"mj = {{s0}}[{{j}}] + (gj - {{s0}}[{{j}}]) * {lit(1 - b1)}", "{s0}[{j}] = mj",
             f"vj = {{s1}}[{{j}}] + (gj * gj - {{s1}}[{{j}}]) * {lit(1 - b2)}", "{s1}[{j}] = vj",
             f"{{w}}[{{j}}] = {{w}}[{{j}}] - {{alpha}} * mj / (math.sqrt(vj) + {lit(eps)})"]
    return [b.format(**n) for b in body]


def _rmsprop_lines(a, n):
    rho, mom, eps = a.get("rho", 0.9), float(a.get("momentum", 0.0)), a.get("epsilon", 1e-7)
    body = ["gj = {g}[{j}]", f"vj = {{s0}}[{{j}}] * {lit(rho)}", f"vj = vj + {lit(1 - rho)} * gj * gj",
            "{s0}[{j}] = vj", f"inc = {{lr}} * gj / math.sqrt(vj + {lit(eps)})"]
    if mom:
        body += [f"bj = {{s1}}[{{j}}] * {lit(mom)}", "bj = bj + inc", "{s1}[{j}] = bj", "{w}[{j}] = {w}[{j}] - bj"]
    else:
        body += ["{w}[{j}] = {w}[{j}] - inc"]
    return [b.format(**n) for b in body]


def _adam_alpha(step, a):
    """As primitives._adam_core: float64 on the host, then float32."""
    k = step + 1
    rate = _sched(step, a)
    b1, b2 = a.get("beta_1", 0.9), a.get("beta_2", 0.999)
    return np.float32(rate * np.sqrt(1 - b2 ** k) / (1 - b1 ** k))


UPDATES: dict[str, UpdateLowering] = {
    "sgd_update": UpdateLowering(_sgd_lines, ("lr",), lambda s, a: (np.float32(_sched(s, a)),)),
    "adam_update": UpdateLowering(_adam_lines, ("alpha",), lambda s, a: (_adam_alpha(s, a),)),
    "adamw_update": UpdateLowering(lambda a, n: _adam_lines(a, n, decay=True), ("alpha", "decay"), lambda s, a: (
        _adam_alpha(s, a), np.float32(_sched(s, a) * a.get("weight_decay", 0.004)))),
    "rmsprop_update": UpdateLowering(_rmsprop_lines, ("lr",), lambda s, a: (np.float32(_sched(s, a)),)),
}


# ---------------------------------------------------------------- the lowering table

@dataclass(frozen=True)
class Lowering:
    """kind: matmul | elementwise | row | colsum | copy | update | alias | constant."""
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
    "concat": Lowering("copy"),
    "slice": Lowering("copy"),
    "softmax": Lowering("row", _row_softmax, "last"),
    "log_softmax": Lowering("row", _row_log_softmax, "last"),
    "softmax_grad": Lowering("row", _row_softmax_grad, "last"),
    "log_softmax_grad": Lowering("row", _row_log_softmax_grad, "last"),
    "mean_squared_error": Lowering("row", _row_mse, "sample"),
    "mean_squared_error_grad": Lowering("row", _row_mse_grad, "sample"),
    "mean_absolute_error": Lowering("row", _row_mae, "sample"),
    "mean_absolute_error_grad": Lowering("row", _row_mae_grad, "sample"),
    "huber": Lowering("row", _row_huber, "sample"),
    "huber_grad": Lowering("row", _row_huber_grad, "sample"),
    "binary_crossentropy": Lowering("row", _row_bce, "sample"),
    "binary_crossentropy_grad": Lowering("row", _row_bce_grad, "sample"),
    "categorical_crossentropy": Lowering("row", _row_cce, "sample"),
    "categorical_crossentropy_grad": Lowering("row", _row_cce_grad, "sample"),
    "sparse_categorical_crossentropy": Lowering("row", lambda rb, op: _row_cce(rb, op, True), "sample"),
    "sparse_categorical_crossentropy_grad": Lowering("row", lambda rb, op: _row_cce_grad(rb, op, True),
                                                     "sample"),
    "kl_divergence": Lowering("row", _row_kld, "sample"),
    "kl_divergence_grad": Lowering("row", _row_kld_grad, "sample"),
    "sparse_accuracy": Lowering("row", _row_sparse_accuracy, "sample"),
    "categorical_accuracy": Lowering("row", _row_categorical_accuracy, "sample"),
    "binary_accuracy": Lowering("row", _row_binary_accuracy, "sample"),
    "mean": Lowering("row", _row_mean, "any"),
    "mean_grad": Lowering("row", _row_mean_grad, "any"),
    **{prim: Lowering("update") for prim in UPDATES},
}


# ---------------------------------------------------------------- the planner

class _Planner:
    def __init__(self, graph: Graph, config: LaunchConfig, gather: bool, name: str):
        self.graph, self.cfg, self.gather, self.gname = graph, config, gather, name
        self.alias: dict[int, Value] = {}
        self.const: dict[int, str] = {}
        self.data: dict[int, str] = {}
        for v in graph.inputs:
            if v.role == "input":
                self.data[v.id] = "x"
            elif v.role == "target":
                self.data[v.id] = "y"
        ops = []
        for op in graph.ops:
            kind = LOWERINGS.get(op.prim)
            if kind is None:
                raise CudaCodegenError(f"no lowering for the primitive '{op.prim}'")
            if kind.kind == "alias":
                self.alias[op.out.id] = self.base(op.inputs[0])
            elif kind.kind == "constant":
                self.const[op.out.id] = lit(op.attrs["value"])
            ops.append(op)
        self.ops = ops
        self.pos = {id(op): i for i, op in enumerate(ops)}
        self.users: dict[int, list[Op]] = {}
        for op in ops:
            if LOWERINGS[op.prim].kind in ("alias", "constant"):
                continue
            for v in op.inputs:
                self.users.setdefault(self.base(v).id, []).append(op)
        self.outputs = {self.base(v).id for v in graph.outputs.values()}
        self.producer = {v.id: op for op in ops for v in op.outputs}
        self.slots: dict[int, int] = {}
        self.kernels: list[Kernel] = []
        self.stored: set[int] = set()
        self.step_scalars: list[StepScalars] = []

    # values -----------------------------------------------------------
    def base(self, v: Value) -> Value:
        return self.alias.get(v.id, v)

    def stored_outside(self, v: Value, group_ids: set[int]) -> bool:
        """Whether a value made in a group must reach memory: something outside reads it."""
        b = self.base(v)
        return b.id in self.outputs or any(id(u) not in group_ids for u in self.users.get(b.id, []))

    def sum_slot(self, op: Op) -> int:
        keys = [k for k, v in self.graph.outputs.items() if self.base(v).id == op.out.id]
        if not keys:
            raise CudaCodegenError(f"the batch mean %{op.out.name} feeds something other than a result")
        if op.out.id not in self.slots:
            self.slots[op.out.id] = len(self.slots)
        return self.slots[op.out.id]

    def available(self, v: Value, anchor: int, local: set[int]) -> bool:
        """v can be read by a kernel placed at op index `anchor`."""
        b = self.base(v)
        if b.id in local or b.id in self.const or b.id in self.data or b.role in ("param", "state", "scalar"):
            return True
        prod = self.producer.get(b.id)
        return prod is not None and self.pos[id(prod)] < anchor and id(prod) in self.done

    def no_writes_between(self, lo: int, hi: int, values) -> bool:
        ids = {self.base(v).id for v in values}
        return not any(w.id in ids for op in self.ops[lo:hi] for w in op.writes)

    # grouping ---------------------------------------------------------
    def grow_chain(self, anchor: int, tail: Op, local: set[int], same_size: int) -> list[Op]:
        """Elementwise ops that can run in the same kernel after `tail`, moved up to `anchor`."""
        chain = []
        while True:
            out = tail.outputs[0]
            nxt = None
            for user in self.users.get(out.id, []):
                if id(user) in self.claimed or LOWERINGS[user.prim].kind != "elementwise":
                    continue
                if _sample(user.outputs[0]) != same_size or user.outputs[0].batched != out.batched:
                    continue
                if not all(self.available(v, anchor, local) for v in user.inputs if self.base(v).id != out.id):
                    continue
                if not self.no_writes_between(anchor, self.pos[id(user)], user.inputs):
                    continue
                nxt = user
                break
            if nxt is None:
                return chain
            chain.append(nxt)
            self.claimed.add(id(nxt))
            local.update(v.id for v in nxt.outputs)
            tail = nxt

    def find_colsum(self, op: Op) -> Op | None:
        """sum_to_last(g) for the weight gradient a^T @ g: the column sums of g come
        from the same shared-memory tiles of g (blocks in the first tile row)."""
        if not op.attrs.get("ta") or op.attrs.get("tb"):
            return None
        g = self.base(op.inputs[1])
        if not g.batched or g.rank != 2:
            return None
        here = self.pos[id(op)]
        for cand in self.users.get(g.id, []):
            if cand.prim != "sum_to_last" or id(cand) in self.claimed:
                continue
            there = self.pos[id(cand)]
            lo, hi = min(here, there), max(here, there)
            if there < here and any(cand.out.id in {self.base(v).id for v in u.inputs}
                                    for u in self.ops[lo + 1:hi]):
                continue
            if not self.no_writes_between(lo, hi, cand.inputs):
                continue
            return cand
        return None

    def run(self) -> Plan:
        self.claimed: set[int] = set()
        self.done: set[int] = set()
        colsums = {}
        for op in self.ops:
            if op.prim == "matmul":
                cand = self.find_colsum(op)
                if cand is not None:
                    colsums[id(op)] = cand
                    self.claimed.add(id(cand))
        i = 0
        while i < len(self.ops):
            op = self.ops[i]
            kind = LOWERINGS[op.prim].kind
            if id(op) in self.done or kind in ("alias", "constant"):
                self.done.add(id(op))
                i += 1
                continue
            if id(op) in self.claimed:      # runs later, inside the kernel that claimed it
                i += 1
                continue
            if kind == "matmul":
                self.emit_matmul(i, op, colsums.get(id(op)))
            elif kind == "elementwise":
                self.claimed.add(id(op))
                local = {v.id for v in op.outputs}
                chain = [op] + self.grow_chain(i, op, local, _sample(op.outputs[0]))
                self.emit_elementwise(chain)
            elif kind == "row":
                self.emit_rows(self.row_group(i))
            elif kind == "colsum":
                self.emit_colsum(op)
            elif kind == "copy":
                self.emit_copy(op)
            elif kind == "update":
                group = [op]
                j = i + 1
                while j < len(self.ops) and self.ops[j].prim == op.prim and self.ops[j].attrs == op.attrs:
                    group.append(self.ops[j])
                    j += 1
                self.emit_update(group)
            i += 1
        self.outputs_plan()
        return self.finish()

    def row_group(self, i: int) -> list[Op]:
        """Consecutive row ops sharing one row shape. `mean` / `mean_grad` work on
        per-sample scalars, so they join only groups whose rows are samples."""
        geometry = None
        per_sample_ops = False
        group = []
        for op in self.ops[i:]:
            low = LOWERINGS[op.prim]
            if id(op) in self.done or low.kind in ("alias", "constant"):
                continue
            if id(op) in self.claimed:
                continue
            if low.kind != "row":
                break
            g = self.row_geometry(op)
            if g is None:
                if geometry is not None and geometry[0] != 1:
                    break
                per_sample_ops = True
            elif geometry is None:
                if per_sample_ops and g[0] != 1:
                    break
                geometry = g
            elif g != geometry:
                break
            group.append(op)
        return group

    def row_geometry(self, op: Op):
        low = LOWERINGS[op.prim]
        if low.geometry == "any":
            return None
        x = op.inputs[0] if low.geometry == "last" else op.inputs[1]
        if not x.batched:
            raise CudaCodegenError(f"{op.prim} on an unbatched value")
        if low.geometry == "last":
            return (_size(x.shape[1:-1]), x.shape[-1])
        return (1, _sample(x))

    # emission ---------------------------------------------------------
    def new_kernel(self, kind: str, ops: list[Op], label: str) -> _Kernel:
        name = f"k{len(self.kernels):02d}_{kind}_{_ident(label)}"[:60]
        return _Kernel(self, name, kind, ops)

    def add(self, kernel: Kernel):
        for op in kernel.ops:
            self.done.add(id(op))
        self.stored |= kernel.writes
        self.kernels.append(kernel)

    def emit_chain(self, k: _Kernel, chain: list[Op], local: dict[int, str], at: _At,
                   group_ids: set[int]) -> list[str]:
        lines = []
        for op in chain:
            def get(v, local=local):
                b = self.base(v)
                return local.get(b.id) or k.ref(v, at.r, at.c)
            stmts, outs = LOWERINGS[op.prim].emit(k, op, get, at)
            lines += stmts
            for value in op.outputs:
                expr = outs[value.id]
                var = k.tmp("e")
                lines.append(f"{var} = {expr}")
                local[value.id] = var
                if self.stored_outside(value, group_ids):
                    lines.append(k.store(value, at.r, at.c, var))
        return lines

    def emit_matmul(self, i: int, op: Op, colsum: Op | None):
        a, b = op.inputs
        ta, tb = bool(op.attrs.get("ta")), bool(op.attrs.get("tb"))
        out = op.out
        M, N = out.shape
        K = a.shape[0] if ta else a.shape[1]
        if N == BATCH:
            raise CudaCodegenError("a matmul whose columns run over the batch")
        local_ids = {out.id}
        chain = self.grow_chain(i, op, local_ids, _sample(out))
        ops = [op] + chain + ([colsum] if colsum else [])
        k = self.new_kernel("matmul", ops, out.name)
        T = self.cfg.tile
        Ms, Ks, Ns = k.dim(M), k.dim(K), str(N)

        body = [f"As = cuda.shared.array(({T}, {T + 1}), float32)",
                f"Bs = cuda.shared.array(({T}, {T + 1}), float32)",
                "tx = cuda.threadIdx.x", "ty = cuda.threadIdx.y",
                f"m0 = cuda.blockIdx.y * {T}", f"n0 = cuda.blockIdx.x * {T}",
                "acc = f32(0.0)"]
        if colsum:
            body.append("cs = f32(0.0)")
        # Loop-invariant row starts are hoisted (the gathered input's index is read once).
        pre, loop = [], []
        # A tile: As[i, q] = op(A)[m0 + i, k0 + q]; loads run along A's rows in memory.
        if not ta:   # A is [M, K]: thread (ty, tx) loads A[m0+ty, k0+tx]
            pre.append(f"ai = m0 + ty")
            row = k.row_base(a, "ai") if self.base(a).batched else f"ai * {a.shape[1]}"
            pre.append(f"arow = {row} if ai < {Ms} else 0")
            loop += ["ak = k0 + tx",
                     f"As[ty, tx] = {k.array(a)}[arow + ak] if ai < {Ms} and ak < {Ks} else f32(0.0)"]
        else:        # A is [K, M]: thread (ty, tx) loads A[k0+ty, m0+tx], stored transposed
            loop += ["ak = k0 + ty", "ai = m0 + tx",
                     f"As[tx, ty] = {k.ref2(a, 'ak', 'ai')} if ak < {Ks} and ai < {Ms} else f32(0.0)"]
        # B tile: Bs[q, j] = op(B)[k0 + q, n0 + j]
        if not tb:   # B is [K, N]: thread (ty, tx) loads B[k0+ty, n0+tx]
            loop += ["bk = k0 + ty", "bj = n0 + tx",
                     f"Bs[ty, tx] = {k.ref2(b, 'bk', 'bj')} if bk < {Ks} and bj < {Ns} else f32(0.0)"]
        else:        # B is [N, K]: thread (ty, tx) loads B[n0+ty, k0+tx], stored transposed
            pre.append("bj = n0 + ty")
            row = k.row_base(b, "bj") if self.base(b).batched else f"bj * {b.shape[1]}"
            pre.append(f"brow = {row} if bj < {Ns} else 0")
            loop += ["bk = k0 + tx",
                     f"Bs[tx, ty] = {k.array(b)}[brow + bk] if bj < {Ns} and bk < {Ks} else f32(0.0)"]
        loop += ["cuda.syncthreads()", f"for q in range({T}):", "    acc += As[ty, q] * Bs[q, tx]"]
        if colsum:
            loop.append("cs += Bs[ty, tx]")
        loop.append("cuda.syncthreads()")
        body += pre + [f"for k0 in range(0, {Ks}, {T}):"] + _indent(loop)
        body += ["m = m0 + ty", "n = n0 + tx"]
        if out.batched:
            at = _At("m", "n", f"m * {N} + n")
        else:
            at = _At("0", f"m * {N} + n", f"m * {N} + n")
        group_ids = {id(o) for o in ops}
        local = {out.id: "acc"}
        epi = []
        if self.stored_outside(out, group_ids):
            epi.append(k.store(out, at.r, at.c, "acc"))
        epi += self.emit_chain(k, chain, local, at, group_ids)
        body += [f"if m < {Ms} and n < {Ns}:"] + _indent(epi or ["pass"])
        if colsum:
            arr = k.array(colsum.out, write=True)
            body += ["if cuda.blockIdx.y == 0:  # the first tile row also sums g's columns (bias gradient)",
                     "    As[ty, tx] = cs", "    cuda.syncthreads()",
                     f"    if ty == 0 and n < {Ns}:", "        t = f32(0.0)",
                     f"        for q in range({T}):", "            t += As[q, tx]",
                     f"        {arr}[n] = t"]
        desc = f"{out.name} = {'A^T' if ta else 'A'} @ {'B^T' if tb else 'B'}, {T}x{T} shared-memory tiles"
        if chain:
            desc += "; epilogue: " + ", ".join(o.prim + (f"({o.attrs['fn']})" if "fn" in o.attrs else "")
                                               for o in chain)
        if colsum:
            desc += f"; fused {colsum.out.name} = sum_to_last"
        grid = (Extent(0, N, T), Extent(1 if M == BATCH else 0, 0 if M == BATCH else M, T))
        self.add(k.finish(body, grid, (T, T), desc))

    def emit_elementwise(self, chain: list[Op]):
        first = chain[0]
        out = first.outputs[0]
        k = self.new_kernel("ew", chain, out.name)
        S = _sample(out)
        tpb = self.cfg.threads
        group_ids = {id(o) for o in chain}
        if out.batched:
            nb = k.scalar("nb")
            body = ["i = cuda.grid(1)", f"if i < {nb} * {S}:",
                    f"    r = i // {S}", f"    c = i - r * {S}"]
            at = _At("r", "c", "i")
            grid = (Extent(S, 0, tpb),)
        else:
            body = ["i = cuda.grid(1)", f"if i < {S}:", "    c = i"]
            at = _At("0", "c", "i")
            grid = (Extent(0, S, tpb),)
        body += _indent(self.emit_chain(k, chain, {}, at, group_ids))
        desc = "elementwise: " + ", ".join(o.prim for o in chain)
        self.add(k.finish(body, grid, (tpb,), desc))

    def emit_rows(self, group: list[Op]):
        geometry = None
        for op in group:
            geometry = geometry or self.row_geometry(op)
        rps, C = geometry or (1, 1)
        L = min(self.cfg.max_lanes, _pow2_at_least(C))
        R = max(1, self.cfg.row_threads // L)
        k = self.new_kernel("rows", group, group[0].outputs[0].name)
        rb = _Row(k, group, rps, C, L, R)
        for op in group:
            LOWERINGS[op.prim].emit(rb, op)
        nb = k.scalar("nb")
        rows = f"{nb} * {rps}" if rps != 1 else nb
        head = ["lane = cuda.threadIdx.x", "w = cuda.threadIdx.y", f"r = cuda.blockIdx.x * {R} + w",
                f"valid = r < {rows}", f"cend = {C} if valid else 0"]
        if rps != 1:
            head += [f"rs = r // {rps}", f"ro = (r - rs * {rps}) * {C}"]
        if rb.uses_red:
            head.insert(0, f"red = cuda.shared.array((2, {R}, {L}), float32)")
        if rb.uses_redi:
            head.insert(0, f"redi = cuda.shared.array((2, {R}, {L}), int32)")
        tail = []
        if rb.means:
            sums = k.scalar("sums")
            tail += [f"acc = cuda.shared.array(({len(rb.means)}, {R}), float32)", "if lane == 0:"]
            tail += [f"    acc[{j}, w] = {var} if valid else f32(0.0)" for j, (var, _) in enumerate(rb.means)]
            tail += ["cuda.syncthreads()", "if lane == 0 and w == 0:  # one atomic per block and result"]
            for j, (_, slot) in enumerate(rb.means):
                tail += [f"    t = f32(0.0)", f"    for q in range({R}):", f"        t += acc[{j}, q]",
                         f"    cuda.atomic.add({sums}, {slot}, float64(t))"]
        desc = f"rows of {C} ({L} lanes x {R} rows per block): " + ", ".join(o.prim for o in group)
        grid = (Extent(rps, 0, R),)
        self.add(k.finish(head + rb.lines + tail, grid, (L, R), desc))

    def emit_colsum(self, op: Op):
        x = op.inputs[0]
        C = x.shape[-1]
        rps = _size(x.shape[1:-1]) if x.batched else _size(x.shape[:-1])
        k = self.new_kernel("colsum", [op], op.out.name)
        CL, CR = self.cfg.col_lanes, self.cfg.col_rows
        if x.batched:
            rows = f"{k.scalar('nb')} * {rps}" if rps != 1 else k.scalar("nb")
            item = (k.ref(x, "row", "col") if rps == 1
                    else k.ref(x, f"row // {rps}", f"(row - (row // {rps}) * {rps}) * {C} + col"))
        else:
            rows = str(rps)
            item = k.ref(x, "0", f"row * {C} + col")
        arr = k.array(op.out, write=True)
        body = [f"red = cuda.shared.array(({CR}, {CL}), float32)",
                "lane = cuda.threadIdx.x", "w = cuda.threadIdx.y", f"col = cuda.blockIdx.x * {CL} + lane",
                "part = f32(0.0)", f"if col < {C}:", f"    for row in range(w, {rows}, {CR}):",
                f"        part += {item}", "red[w, lane] = part", "cuda.syncthreads()",
                f"if w == 0 and col < {C}:", "    t = f32(0.0)", f"    for q in range({CR}):",
                "        t += red[q, lane]", f"    {arr}[col] = t"]
        self.add(k.finish(body, (Extent(0, C, CL),), (CL, CR), f"{op.out.name} = column sums"))

    def emit_copy(self, op: Op):
        """concat / slice as index remaps over the flat sample: with `inner` the
        elements after the axis, element (o, a, i) of the output reads its input at
        axis position a (minus the input's offset for concat, plus start for slice)."""
        out = op.out
        k = self.new_kernel("copy", [op], out.name)
        axis = op.attrs["axis"]
        S = _sample(out)
        inner = _size(out.shape[axis + 1:])
        span_out = out.shape[axis] * inner
        tpb = self.cfg.threads
        nb = k.scalar("nb")
        body = ["i = cuda.grid(1)", f"if i < {nb} * {S}:", f"    r = i // {S}", f"    cs = i - r * {S}",
                f"    o = cs // {span_out}", f"    col = cs - o * {span_out}"]
        if op.prim == "slice":
            x = op.inputs[0]
            span_in = x.shape[axis] * inner
            src = k.ref(x, "r", f"o * {span_in} + col + {op.attrs['start'] * inner}")
            body.append("    " + k.store(out, "r", "cs", src))
        else:
            start = 0
            for n, x in enumerate(op.inputs):
                span_in = x.shape[axis] * inner
                test = "if" if n == 0 else "elif"
                cond = f"col < {start + span_in}" if n < len(op.inputs) - 1 else ""
                body.append(f"    {test} {cond}:" if cond else "    else:")
                src = k.ref(x, "r", f"o * {span_in} + col - {start}")
                body.append("        " + k.store(out, "r", "cs", src))
                start += span_in
        if not out.batched:
            raise CudaCodegenError(f"{op.prim} of unbatched values")
        self.add(k.finish(body, (Extent(S, 0, tpb),), (tpb,), f"{op.prim} on axis {axis}"))

    def emit_update(self, group: list[Op]):
        """One kernel for every parameter: thread i updates element i of the
        concatenation of all parameters; the segment test uses static offsets."""
        prim = group[0].prim
        low = UPDATES[prim]
        gi = len(self.step_scalars)
        self.step_scalars.append(StepScalars(prim, dict(group[0].attrs)))
        k = self.new_kernel("update", group, prim)
        names = {name: k.param(("opt", gi, j), "f32", name) for j, name in enumerate(low.scalar_names)}
        total = 0
        body = ["i = cuda.grid(1)"]
        for n, op in enumerate(group):
            w, g, *state, _step = op.inputs
            size = _size(w.shape)
            arrays = dict(names, w=k.array(w, write=True), g=k.array(g), j="j")
            arrays.update({f"s{q}": k.array(s, write=True) for q, s in enumerate(state)})
            test = "if" if n == 0 else "elif"
            body.append(f"{test} i < {total + size}:  # {w.name}")
            body += _indent([f"j = i - {total}"] + low.lines(group[0].attrs, arrays))
            total += size
        self.add(k.finish(body, (Extent(0, total, self.cfg.threads),), (self.cfg.threads,),
                          f"{prim} of {len(group)} parameters ({total} elements)"))

    def outputs_plan(self):
        self.out_plan: dict[str, tuple] = {}
        for key, v in self.graph.outputs.items():
            b = self.base(v)
            prod = self.producer.get(b.id)
            if prod is not None and prod.prim == "mean":
                self.out_plan[key] = ("sum", self.slots[b.id])
                continue
            if b.id not in self.stored:
                if not b.batched:
                    raise CudaCodegenError(f"the output {key} is not computed on the device")
                copy_out = Value(f"{b.name}.out", b.dtype, b.shape, "temp")
                copy = Op("copy", (b,), (copy_out,))
                self.producer[copy_out.id] = copy
                self.pos[id(copy)] = len(self.ops)
                self.outputs.add(copy_out.id)
                self.emit_elementwise([copy])
                b = copy_out
            self.out_plan[key] = ("buffer", b.id)

    def finish(self) -> Plan:
        # Every buffer a kernel reads must have been written by an earlier kernel (a row
        # kernel may re-read its own row vectors: each lane reads only what it wrote).
        written: set[int] = set()
        values = {v.id: v for v in self.graph.values()}
        for kern in self.kernels:
            for vid in kern.reads:
                v = values.get(vid)
                if v is not None and v.role in ("param", "state"):
                    continue
                if vid not in written and not (kern.kind == "rows" and vid in kern.writes):
                    name = v.name if v is not None else vid
                    raise CudaCodegenError(f"internal: kernel {kern.name} reads %{name} before it is written")
            written |= kern.writes
        buffers: dict[int, Buffer] = {}
        every = dict(values)
        for kern in self.kernels:
            for op in kern.ops:
                for v in op.outputs:
                    every.setdefault(v.id, v)
        for vid in written:
            v = every[vid]
            if v.role in ("param", "state"):
                continue
            buffers[vid] = Buffer(v, v.batched, _sample(v), v.dtype)
        header = ["import math", "from numba import cuda, float32, float64, int32, int64, uint64", "",
                  "f32 = float32", "u64 = uint64", "",
                  f"# generated by modelc for graph '{self.gname}' ({'gathered' if self.gather else 'contiguous'}"
                  f" inputs); launch config {self.cfg}", ""]
        source = "\n".join(header) + "\n\n" + "\n\n".join(kk.source for kk in self.kernels)
        n_sums = len(self.slots)
        return Plan(self.graph, self.cfg, self.gather, self.kernels, buffers, dict(self.alias), dict(self.data),
                    self.out_plan, n_sums, self.step_scalars, source)


def plan_graph(graph: Graph, config: LaunchConfig = GPU_CONFIG, gather: bool = True, name: str | None = None) -> Plan:
    """Lower `graph` to kernels. `gather`: data rows are read through the epoch's
    index (training); otherwise contiguously from `off` (evaluate, predict)."""
    return _Planner(graph, config, gather, name or graph.name).run()
