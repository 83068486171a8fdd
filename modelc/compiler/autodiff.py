"""Reverse-mode differentiation over the IR, and the optimizer step after it.

The forward graph plus one VJP per op, in reverse order, gives the gradient of
the loss for every parameter; each parameter then gets one update op that
writes it and its optimizer state in place. The result is one training graph:
forward, loss, backward, update.
"""
from __future__ import annotations

from dataclasses import replace

from modelc.compiler.emitter import Emitter
from modelc.compiler.ir import Graph, Value
from modelc.compiler.formulas import UpdateRule
from modelc.compiler.primitives import PRIMITIVES


def gradients(graph: Graph, loss: Value, emit: Emitter) -> dict[int, Value]:
    """Emit the backward pass of `graph` for scalar `loss`; returns value id -> gradient."""
    needs = {p.id for p in graph.params if p.role == "param"}     # moving statistics are not trained
    for op in graph.ops:
        if any(v.id in needs for v in op.inputs):
            needs.update(v.id for v in op.outputs)
    grads: dict[int, Value] = {loss.id: emit("constant", name=f"d.{loss.name}", value=1.0)}
    for op in reversed(list(graph.ops)):
        out_grads = [grads.get(v.id) for v in op.outputs]
        if not out_grads or out_grads[0] is None or not any(v.id in needs for v in op.inputs):
            continue
        rule = PRIMITIVES[op.prim].vjp
        if rule is None:
            raise AssertionError(f"no gradient rule for {op.prim}")
        emit.loc = op.loc
        before = len(emit.graph.ops)
        input_grads = rule(emit, op, out_grads)
        fresh = {v.id for new in emit.graph.ops[before:] for v in new.outputs}
        for value, grad in zip(op.inputs, input_grads):
            if grad is None or value.id not in needs:
                continue
            if grad.id in fresh and not grad.name.startswith("d."):
                emit.taken.discard(grad.name)
                grad.name = emit.fresh(f"d.{value.name}")
            if value.id in grads:
                grads[value.id] = emit("add", grads[value.id], grad, name=f"d.{value.name}")
            else:
                grads[value.id] = grad
    return grads


def training_graph(forward: Graph, loss: Value, rule: UpdateRule, options: dict) -> Graph:
    """forward + backward + one in-place update op (of `rule`) per parameter. With norm
    clipping, each update also reads the sum of squares its norm is taken over: its own
    gradient's (clipnorm) or all gradients' together (global_clipnorm), as Keras clips."""
    graph = replace(forward, name="train", ops=list(forward.ops), state=[])
    emit = Emitter(graph)
    grads = gradients(forward, loss, emit)
    step = next(v for v in graph.inputs if v.role == "scalar" and v.dtype == "i64")
    emit.loc = None
    trained = [(param, grads[param.id]) for param in graph.params if param.role == "param" and param.id in grads]
    norms: dict[int, Value] = {}
    if options.get("clipnorm"):
        norms = {param.id: emit("sum_squares", grad, name=f"{param.name}.sumsq") for param, grad in trained}
    elif options.get("global_clipnorm") and trained:
        squares = [emit("sum_squares", grad, name=f"{param.name}.sumsq") for param, grad in trained]
        total = squares[0] if len(squares) == 1 else emit("add", *squares, name="grads.sumsq")
        norms = {param.id: total for param, _ in trained}
    for param, grad in trained:
        state = [Value(f"{param.name}.{kind}", "f32", param.shape, "state") for kind in rule.state]
        graph.state.extend(state)
        extra = (norms[param.id],) if param.id in norms else ()
        emit.emit_op(rule.name, (param, grad, *state, step, *extra), dict(options), writes=(param, *state))
    return graph
