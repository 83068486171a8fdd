"""Appending ops to a graph with their output types inferred from the primitive."""
from __future__ import annotations

from modelc.compiler.ir import Graph, Op, Value
from modelc.compiler.primitives import PRIMITIVES, ShapeError
from modelc.errors import SpecError
from modelc.grammar.ast import Pos


class Emitter:
    def __init__(self, graph: Graph, taken: set[str] | None = None):
        self.graph = graph
        self.taken = taken if taken is not None else {v.name for v in graph.values()}
        self.loc: Pos | None = None          # blamed for shape errors and recorded on ops

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}.{k}", k + 1
        self.taken.add(name)
        return name

    def value(self, name: str, dtype: str, shape: tuple, role: str) -> Value:
        return Value(self.fresh(name), dtype, tuple(shape), role)

    def emit_op(self, prim: str, inputs, attrs: dict, name: str | None = None,
                writes=()) -> Op:
        try:
            types = PRIMITIVES[prim].infer([(v.dtype, v.shape) for v in inputs], attrs)
        except ShapeError as err:
            raise SpecError(str(err), self.loc) from None
        base = name or prim
        outputs = tuple(self.value(base if i == 0 else f"{base}.{i}", d, s, "temp")
                        for i, (d, s) in enumerate(types))
        op = Op(prim, tuple(inputs), outputs, dict(attrs), self.loc, tuple(writes))
        self.graph.ops.append(op)
        return op

    def __call__(self, prim: str, *inputs: Value, name: str | None = None, **attrs) -> Value:
        return self.emit_op(prim, inputs, attrs, name).out
