"""The IR verifier: SSA form, definition before use, and every op's shapes against its
primitive's rule. A failure is always a compiler bug, never a user mistake."""
from __future__ import annotations

import itertools

from modelc.compiler.ir import Graph, format_op
from modelc.compiler.primitives import PRIMITIVES


class VerifyError(AssertionError):
    """A malformed graph: always a compiler bug, never a user mistake."""


def verify(graph: Graph) -> None:
    """Check SSA form, definition before use, and shapes against the primitives' rules."""
    defined = {v.id for v in itertools.chain(graph.inputs, graph.params, graph.state)}
    for op in graph.ops:
        if op.prim not in PRIMITIVES:
            raise VerifyError(f"unknown primitive {op.prim}")
        for v in op.inputs:
            if v.id not in defined:
                raise VerifyError(f"{op.prim}: %{v.name} used before it is defined")
        for v in op.writes:
            if v.role not in ("param", "stat", "state"):
                raise VerifyError(f"{op.prim}: writes %{v.name}, which is not a parameter or state")
        expected = PRIMITIVES[op.prim].infer([(v.dtype, v.shape) for v in op.inputs], op.attrs)
        got = [(v.dtype, tuple(v.shape)) for v in op.outputs]
        if [(d, tuple(s)) for d, s in expected] != got:
            raise VerifyError(f"{format_op(op)}: outputs should be {expected}")
        for v in op.outputs:
            if v.id in defined:
                raise VerifyError(f"%{v.name} defined twice")
            defined.add(v.id)
    for key, v in graph.outputs.items():
        if v.id not in defined:
            raise VerifyError(f"output {key} = %{v.name} is never defined")
