"""The builders lowerings write kernel source through (pure Python).

`KernelBuilder` collects one kernel's parameters and body: it names a buffer
parameter for each value a kernel reads or writes (through aliases, data inputs
read through the epoch's index) and writes the index arithmetic of a read or a
store. `RowBuilder` is the emission state of a row kernel (lanes over the
columns of one row, reductions in shared memory), the interface the row
lowerings of `cuda_rules` and `cuda_formulas` are written against. `At` says
where an elementwise chain is evaluated.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from modelc.compiler.codegen.cuda_plan import CudaCodegenError, KParam, Kernel, indent, lit
from modelc.compiler.ir import BATCH, I64, Op, Value


def ident(text: str) -> str:
    """`text` as a Python identifier (every non-word character an underscore)."""
    return re.sub(r"\W", "_", text)


class KernelBuilder:
    """Collects one kernel's parameters and body while lowerings emit source.

    `planner` answers for the graph being lowered: `base(v)` (the value whose
    storage v shares), `data` (base id -> "x" | "y" for data inputs), `const`
    (base id -> literal), `gather` (data rows read through the index),
    `stored_outside(v, group_ids)` and `sum_slot(op)`."""

    def __init__(self, planner, name: str, kind: str, ops: list[Op]):
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
            return self.param(("data", role), "i64[]" if base.dtype == I64 else "f32[]", f"d_{ident(base.name)}")
        (self.writes if write else self.reads).add(base.id)
        prefix = {"param": "p_", "stat": "p_", "state": "s_"}.get(base.role, "t_")
        return self.param(("value", base.id), "i64[]" if base.dtype == I64 else "f32[]",
                          prefix + ident(base.name))

    def dim(self, d) -> str:
        return self.scalar("nb") if d == BATCH else str(d)

    def row_base(self, value: Value, r: str) -> str:
        """Index of element 0 of row `r` (a batch row for batched values)."""
        base = self.p.base(value)
        s = base.sample_size()
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
        s = base.sample_size()
        return f"{arr}[({r}) * {s} + {c}] = {expr}" if s != 1 else f"{arr}[{r}] = {expr}"

    def finish(self, body: list[str], grid, block, doc: str) -> Kernel:
        """The kernel: `body` reads its block and thread through the names of `INDEX`, defined
        from numba's `cuda.blockIdx`/`cuda.threadIdx` in the standalone kernel, and set by the
        epoch kernel that inlines it (`cuda_epoch`)."""
        args = ", ".join(p.name for p in self.params)
        lines = [f"def {self.name}({args}):", f'    """{doc}"""']
        lines += ["    " + line if line else "" for line in index_lines(body, tuple(block)) + body]
        return Kernel(self.name, self.kind, self.ops, self.params, "\n".join(lines) + "\n",
                      tuple(grid), tuple(block), set(self.writes), set(self.reads), list(body))


INDEX = {"bx": "cuda.blockIdx.x", "by": "cuda.blockIdx.y", "bz": "cuda.blockIdx.z",
         "tx": "cuda.threadIdx.x", "ty": "cuda.threadIdx.y"}


def index_lines(body: list[str], block: tuple, device: bool = False) -> list[str]:
    """The definitions of the block and thread names `body` uses (`gi`: the thread's index in
    a 1-D grid, `cuda.grid(1)`); with `device`, only `gi`: the epoch kernel sets the others."""
    text = "\n".join(body)
    used = {n for n in (*INDEX, "gi") if re.search(rf"\b{n}\b", text)}
    if "gi" in used:
        assert len(block) == 1, "internal: a 1-D index in a kernel with a 2-D block"
        used |= {"bx", "tx"}
    lines = [] if device else [f"{n} = {INDEX[n]}" for n in INDEX if n in used]
    return lines + ([f"gi = bx * {block[0]} + tx"] if "gi" in used else [])


@dataclass
class At:
    """Where an elementwise chain is evaluated: sample r, in-sample index c (or flat c
    for unbatched values), and the flat index into the whole batch tensor. `last`,
    when a template knows it: (n, the index along a last axis of n elements), so a
    per-channel read needs no `c % n`."""
    r: str
    c: str
    flat: str
    last: tuple[int, str] | None = None


def last_index(k: KernelBuilder, x: Value, at: At) -> str:
    """The index along the last axis of x, read elementwise at `at` (a bias or a
    per-channel statistic's element)."""
    n = x.shape[-1]
    if at.last is not None and at.last[0] == n:
        return at.last[1]
    base = k.p.base(x)
    whole_row = (base.batched and x.rank == 2) or (not base.batched and x.rank == 1)
    return at.c if whole_row else f"({at.c}) % {n}"


class RowBuilder:
    """Emission state of a row kernel: lanes stride over the columns of one row
    (c = lane, lane + L, ...), so each lane re-reads only what it wrote itself;
    reductions go through double-buffered shared memory (one barrier each) and
    leave the row's result in every lane. Per-row scalars are computed as
    `expr if valid else 0` so rows past the batch never evaluate a log of junk
    and still reach every barrier.

    A row lowering `emit(rb, op)` appends source through these methods; `C` is
    the row length, `x(v, c)` reads element c of the row, `s(v)` a per-row
    scalar. The rows are samples (`rps == 1`) for every lowering whose geometry
    is "sample"."""

    def __init__(self, k: KernelBuilder, group_ops: list[Op], rps: int, cols: int, lanes: int, rows: int):
        self.k, self.rps, self.C, self.L, self.R = k, rps, cols, lanes, rows
        self.group_ids = {id(op) for op in group_ops}
        self.lines: list[str] = []
        self.memo: dict = {}
        self.scalars: dict[int, str] = {}
        self.means: list[tuple[str, int]] = []     # (variable, sums slot)
        self.flip = 0
        self.uses_red = self.uses_redi = False

    def tmp(self, prefix="v") -> str:
        """A fresh variable name of this kernel."""
        return self.k.tmp(prefix)

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
        self.lines += indent(body)

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
        return self.argmax_of([], self.x(v))

    def argmax_of(self, pre: list[str], value_expr: str) -> str:
        """Index of the first largest value of an element expression (after the statements
        `pre`, which load what it reads at column c), as numpy's argmax."""
        self.uses_red = self.uses_redi = True
        bv, bi = self.init("f32(-math.inf)", "bv"), self.init(str(self.C), "bi")
        t = self.k.tmp("t")
        self.loop(pre + [f"{t} = {value_expr}", f"if {t} > {bv} or {bi} == {self.C}:",
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

    def softmax(self, v: Value, temperature) -> str:
        """softmax(v / T) at column c: re-read if this kernel already stored it (each
        lane reads back only what it wrote), else recomputed from the row's stats."""
        stored = self.memo.get(("softmax", self.k.p.base(v).id, float(temperature)))
        if stored is not None:
            return self.x(stored)
        mx, se = self.stats(v, temperature)
        return f"math.exp({self.x(v)} / {lit(temperature)} - {mx}) / {se}"

    def stored_softmax(self, v: Value, temperature, out: Value):
        """Record that `out` holds softmax(v / T) in this kernel, for `softmax` to re-read."""
        self.memo[("softmax", self.k.p.base(v).id, float(temperature))] = out
