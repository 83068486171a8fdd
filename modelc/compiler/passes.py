"""Graph-to-graph rewrites. Each returns a new Graph and leaves its input alone,
since the predict, evaluate and train graphs share ops."""
from __future__ import annotations

from dataclasses import replace

from modelc.compiler.ir import Graph, Op


def dead_code(graph: Graph) -> Graph:
    """Drop ops whose results nobody reads (optimizer updates always stay)."""
    live = {v.id for v in graph.outputs.values()}
    kept: list[Op] = []
    for op in reversed(graph.ops):
        if op.writes or any(v.id in live for v in op.outputs):
            kept.append(op)
            live.update(v.id for v in op.inputs)
    kept.reverse()
    used_params = [p for p in graph.params if p.id in live or any(p in op.writes for op in kept)]
    return replace(graph, ops=kept, params=used_params)


# loss primitive -> the op on probabilities it can absorb
_FUSABLE = {
    "categorical_crossentropy": "softmax",
    "sparse_categorical_crossentropy": "softmax",
    "binary_crossentropy": "sigmoid",
}


def fuse_softmax_cross_entropy(graph: Graph) -> Graph:
    """softmax (or sigmoid) followed by cross-entropy becomes one cross-entropy
    on the logits: numerically stable, and its gradient is simply p - y.
    Keras does the same when a loss receives a softmax layer's output."""
    producers = graph.producers()
    ops = []
    for op in graph.ops:
        kind = _FUSABLE.get(op.prim)
        source = producers.get(op.inputs[1].id) if kind else None
        if source is not None and not op.attrs.get("from_logits"):
            is_softmax = source.prim == "softmax" and kind == "softmax"
            is_sigmoid = source.prim == "act" and source.attrs.get("fn") == "sigmoid" and kind == "sigmoid"
            if is_softmax or is_sigmoid:
                attrs = dict(op.attrs, from_logits=True)
                if is_softmax:
                    attrs["temperature"] = source.attrs.get("temperature", 1.0)
                op = Op(op.prim, (op.inputs[0], source.inputs[0]), op.outputs, attrs, op.loc, op.writes)
        ops.append(op)
    return dead_code(replace(graph, ops=ops))
