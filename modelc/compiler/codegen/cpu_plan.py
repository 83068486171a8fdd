"""The cpu target's op tables: each graph lowered to kernel calls, and, per batch
size, every value placed in one preallocated arena and every call encoded as a
row of numbers that the cached interpreter (`cpu.py`) runs.

A row is an opcode (the kernel, or FORMULA: a formula kernel's wrapper, whose
slot is the row's first number), whole-number operands (a view is its arena
offset, its rows, negated when they are per sample, and its columns) and
float64 options. Values whose lifetimes do not overlap share arena space
(`passes.plan_buffers`); a reshape is a view and lives where its input does;
the workspaces a call needs while it runs (a convolution's patches) share one
region.
The parameters and the optimizer state sit at the front of the arena, at
offsets that do not depend on the batch size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from modelc.compiler.codegen.cpu_formula_calls import FormulaCall
from modelc.compiler.codegen.cpu_kernels import IMPLICIT, KERNELS, Call, Formula, Kernel, View
from modelc.compiler.codegen.cpu_lower import LOWERINGS
from modelc.compiler.ir import BATCH, Graph, Op, Value
from modelc.compiler.passes import plan_buffers
from modelc.compiler.phases import phases

OPCODES = {name: code for code, name in enumerate(sorted(KERNELS))}
FORMULA = len(OPCODES)     # a call of a formula kernel's wrapper (see cpu_formula_calls.py)
ALIGN = 16                 # arena offsets are multiples of 16 elements (64 bytes)


# ---------------------------------------------------------------- encoding (the interpreter reads the same)

def dispatch_args(k: Kernel) -> list[str]:
    """The interpreter's argument expressions for a call of `k`: row `r`, floats `f`."""
    args, i, q = [], 0, 0
    for kind, _ in k.params:
        if kind in ("m", "v"):
            args.append(f"{'_mat' if kind == 'm' else '_vec'}(A, r, {i}, n)")
            i += 3
        elif kind == "i":
            args.append(f"r[{i}]")
            i += 1
        elif kind == "f":
            args.append(f"f[{q}]")
            q += 1
        else:
            args.append(IMPLICIT[kind])
    return args


def encode(call: Call, offset) -> tuple[list[int], list[float]]:
    """The row operands of `call`, in `dispatch_args` order; `offset(value)` places a value."""
    operands = iter(call.operands)
    ints: list[int] = []
    floats: list[float] = []
    for kind, _ in KERNELS[call.kernel].params:
        if kind in IMPLICIT:
            continue
        operand = next(operands)
        if kind in ("m", "v"):
            assert isinstance(operand, View), call
            ints += [offset(operand.value), -operand.rows if operand.batched else operand.rows, operand.cols]
        elif kind == "i":
            ints.append(int(operand))
        else:
            floats.append(float(operand))
    return ints, floats


# ---------------------------------------------------------------- lowering a graph

@dataclass
class Lowered:
    """A graph as op groups in execution order (fused ops together), each with its calls."""
    graph: Graph
    groups: list[list[Op]] = field(default_factory=list)
    calls: list[list] = field(default_factory=list)          # Call or FormulaCall, per group
    buffers: list[Value] = field(default_factory=list)       # values that need arena space
    views: dict[int, int] = field(default_factory=dict)      # reshape output id -> input id
    scratch: list[list[Value]] = field(default_factory=list)  # per group: workspaces its calls use
    # training: the first group of the update phase, and what the phases exchange (compiler/phases.py)
    update_group: int = 0
    exchanged: list[Value] = field(default_factory=list)


def lower_graph(graph: Graph, formulas) -> Lowered:
    """Lower every op to kernel calls; `formulas` (cpu_formula_calls.Formulas) places the
    formula ops' kernels in the interpreter's slots."""
    out = Lowered(graph)
    ops = graph.ops
    cut = phases(graph) if graph.name == "train" else None
    index_of = {id(op): i for i, op in enumerate(ops)}
    consumed: set[int] = set()
    for index, op in enumerate(ops):
        if id(op) in consumed:
            continue
        taken: list[Op] = []

        def ahead(predicate, index=index):
            """Let a lowering absorb the next op (bias+activation, grad+bias-grad); called
            again, the one after it (convolution+bias+activation)."""
            at = index + 1 + len(taken)
            if at < len(ops) and predicate(ops[at]):
                nxt = ops[at]
                taken.append(nxt)
                consumed.add(id(nxt))
                return nxt
            return None

        calls = [formulas.add(c.op) if isinstance(c, Formula) else c for c in LOWERINGS[op.prim](op, ahead)]
        group = [op] + taken
        if cut is not None:
            sides = {index_of[id(member)] >= cut.split for member in group}
            assert len(sides) == 1, f"{op.prim} is fused across the cut before the optimizer"
            if not sides.pop():
                out.update_group = len(out.groups) + 1
        out.groups.append(group)
        out.calls.append(calls)
        out.scratch.append([operand.value for call in calls if isinstance(call, Call) for operand in call.operands
                            if isinstance(operand, View) and operand.value.role == "scratch"])
        for member in group:
            if member.prim == "reshape":
                out.views[member.out.id] = member.inputs[0].id
            else:
                out.buffers += [v for v in member.outputs if v not in out.buffers]
    if cut is not None:
        out.exchanged = cut.exchanged
    return out


# ---------------------------------------------------------------- placing values, per batch size

def aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def elements(value_shape, batch: int) -> int:
    size = 1
    for d in value_shape:
        size *= batch if d == BATCH else int(d)
    return size


@dataclass
class Table:
    """What the interpreter runs for one graph at one batch size."""
    code: np.ndarray            # int64 (ops,)
    ints: np.ndarray            # int64 (ops, width)
    floats: np.ndarray          # float64 (ops, width)
    results: np.ndarray         # int64 offsets of the graph's scalar results, in result_names order
    x: int                      # offset of the batch's inputs
    y: int                      # offset of its targets (in the int arena for class labels)
    y_kind: int                 # 0 none, 1 class labels, 2 float targets
    out: int                    # offset of the prediction (predict), else -1
    floats_size: int            # arena elements needed
    ints_size: int
    update_row: int = 0         # training: the first row of the update phase
    exchanged: list[tuple[int, int]] = field(default_factory=list)    # its (offset, elements) to exchange


def build_table(low: Lowered, batch: int, persistent: dict[str, int], start: int,
                result_names: list[str]) -> Table:
    """Place every value of `low` for batches of `batch` rows, temporaries from `start`,
    parameters and state at `persistent` (by name), and encode the rows."""
    graph = low.graph
    where: dict[int, int] = {}
    sizes = {"f32": start, "i64": 0}

    def place(value_id: int, dtype: str, count: int) -> int:
        at = sizes[dtype]
        sizes[dtype] = aligned(at + count)
        where[value_id] = at
        return at

    for value in graph.params + graph.state:
        where[value.id] = persistent[value.name]
    x = next(v for v in graph.inputs if v.role == "input")
    y = next((v for v in graph.inputs if v.role == "target"), None)
    x_at = place(x.id, "f32", elements(x.shape, batch))
    y_at = place(y.id, y.dtype, elements(y.shape, batch)) if y is not None else 0
    outputs = {v.id for v in graph.outputs.values()}
    plan = plan_buffers(low.groups, low.buffers, low.views, outputs)
    slots = [place(-1 - s, dtype, elements(shape, batch)) for s, (dtype, shape) in enumerate(plan.slots)]
    for value in low.buffers:
        where[value.id] = slots[plan.slot_of[value.id]]
    # Workspaces live only while their call runs: every group's start at one shared region.
    region = sizes["f32"]
    for workspaces in low.scratch:
        at = region
        for value in workspaces:
            where[value.id] = at
            at = aligned(at + elements(value.shape, batch))
        sizes["f32"] = max(sizes["f32"], at)

    def offset(value: Value) -> int:
        vid = value.id
        while vid in low.views:
            vid = low.views[vid]
        return where[vid]

    rows: list[tuple[int, list[int], list[float]]] = []
    update_row = None
    for group, calls in enumerate(low.calls):
        if group == low.update_group:
            update_row = len(rows)
        for call in calls:
            if isinstance(call, FormulaCall):
                ints = [offset(v) if isinstance(v, Value) else int(v) for v in call.ints]
                rows.append((FORMULA, [call.slot] + ints, list(call.floats)))
            else:
                rows.append((OPCODES[call.kernel],) + encode(call, offset))
    width = max([len(r[1]) for r in rows] + [1])
    fwidth = max([len(r[2]) for r in rows] + [1])
    ints = np.zeros((len(rows), width), np.int64)
    floats = np.zeros((len(rows), fwidth), np.float64)
    for i, (_, row_ints, row_floats) in enumerate(rows):
        ints[i, :len(row_ints)] = row_ints
        floats[i, :len(row_floats)] = row_floats
    predict = "prediction" in graph.outputs
    results = [] if predict else [offset(graph.outputs[k]) for k in result_names]
    return Table(np.array([r[0] for r in rows], np.int64), ints, floats, np.array(results, np.int64),
                 x_at, y_at, 0 if y is None else (1 if y.dtype == "i64" else 2),
                 offset(graph.outputs["prediction"]) if predict else -1,
                 sizes["f32"], max(sizes["i64"], 1), len(rows) if update_row is None else update_row,
                 [(offset(v), elements(v.shape, batch)) for v in low.exchanged])
