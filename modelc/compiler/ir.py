"""The typed graph IR: values with a dtype and a static shape, ops naming a primitive.

The batch axis is the symbol `B`; every other dimension is a known integer.
A `Graph` is a straight-line program (ops in execution order), which is what
every backend wants: the numpy target interprets it, the cpu and cuda targets
emit code from it. Optimizer updates write parameters and state in place; such
ops have no outputs and list what they write in `op.writes`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable

from modelc.source import Pos

BATCH = "B"          # the symbolic batch dimension
F32 = "f32"
I64 = "i64"
DTYPES = (F32, I64)

Shape = tuple  # of int or BATCH


def format_shape(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


@dataclass(eq=False)
class Value:
    """An SSA value. `role` tells where it lives: data fed per batch, trained parameters,
    parameters updated but not trained ("stat": batch normalization's moving statistics),
    optimizer state, scalars fed per step, or temporaries."""
    name: str
    dtype: str
    shape: Shape
    role: str = "temp"      # input | target | param | stat | state | scalar | temp
    id: int = field(default_factory=itertools.count().__next__)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def batched(self) -> bool:
        return bool(self.shape) and self.shape[0] == BATCH

    def sample_size(self) -> int:
        """Elements per sample (or in total, for unbatched values)."""
        size = 1
        for d in self.shape[1:] if self.batched else self.shape:
            size *= d
        return size

    def __repr__(self) -> str:
        return f"%{self.name}:{self.dtype}{format_shape(self.shape)}"


@dataclass(eq=False)
class Op:
    prim: str
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    loc: Pos | None = None
    writes: tuple[Value, ...] = ()     # values updated in place (optimizer steps)

    @property
    def out(self) -> Value:
        (value,) = self.outputs
        return value


@dataclass
class Graph:
    """A straight-line program. `outputs` names the values a caller reads back."""
    name: str
    inputs: list[Value] = field(default_factory=list)     # data and scalars fed by the caller
    params: list[Value] = field(default_factory=list)
    state: list[Value] = field(default_factory=list)      # optimizer state
    ops: list[Op] = field(default_factory=list)
    outputs: dict[str, Value] = field(default_factory=dict)

    def producers(self) -> dict[int, Op]:
        return {v.id: op for op in self.ops for v in op.outputs}

    def users(self) -> dict[int, list[Op]]:
        users: dict[int, list[Op]] = {}
        for op in self.ops:
            for v in op.inputs:
                users.setdefault(v.id, []).append(op)
        return users

    def values(self) -> Iterable[Value]:
        seen: set[int] = set()
        for v in itertools.chain(self.inputs, self.params, self.state,
                                 (v for op in self.ops for v in op.outputs)):
            if v.id not in seen:
                seen.add(v.id)
                yield v

    def __str__(self) -> str:
        return format_graph(self)


def _format_attr(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.9g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_format_attr(v) for v in value) + ")"
    return str(value)


def format_op(op: Op, locations: bool = True) -> str:
    lhs = ", ".join(repr(v) for v in op.outputs)
    args = ", ".join(f"%{v.name}" for v in op.inputs)
    attrs = " ".join(f"{k}={_format_attr(v)}" for k, v in op.attrs.items())
    text = f"{op.prim}({args})" + (f" {{{attrs}}}" if attrs else "")
    if op.writes:
        text += "  ! writes " + ", ".join(f"%{v.name}" for v in op.writes)
    if locations and op.loc is not None and op.loc.line:
        text += f"    # line {op.loc.line}"
    return f"  {lhs} = {text}" if lhs else f"  {text}"


def format_graph(graph: Graph, locations: bool = True) -> str:
    lines = [f"graph {graph.name}("]
    for title, values in (("inputs", graph.inputs), ("params", graph.params), ("state", graph.state)):
        if values:
            lines.append(f"  {title}: " + ", ".join(repr(v) for v in values))
    lines.append(") {")
    lines += [format_op(op, locations) for op in graph.ops]
    outs = ", ".join(f"{k}=%{v.name}" for k, v in graph.outputs.items())
    lines.append(f"  return {outs}")
    lines.append("}")
    return "\n".join(lines)
