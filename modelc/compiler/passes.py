"""Graph-to-graph rewrites. Each returns a new Graph and leaves its input alone,
since the predict, evaluate and train graphs share ops."""
from __future__ import annotations

from dataclasses import dataclass, replace

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


@dataclass
class BufferPlan:
    """Which preallocated buffer each temporary lives in. Values whose live ranges
    do not overlap share a buffer of their dtype and shape."""
    slots: list[tuple[str, tuple]]          # (dtype, shape) of each buffer
    slot_of: dict[int, int]                 # value id -> buffer index


def plan_buffers(groups: list[list[Op]], buffered: list, views: dict[int, int],
                 keep: set[int]) -> BufferPlan:
    """Assign `buffered` values (written by the ops of `groups`, executed in order)
    to reusable buffers. A group is a unit: its outputs never take a buffer freed
    by its own inputs, so fused loops can read and write freely. `views` maps a
    view's value id to the value it looks into (a reshape), whose buffer then lives
    as long as the view; `keep` holds ids read after the last group (outputs)."""
    def root(vid: int) -> int:
        while vid in views:
            vid = views[vid]
        return vid

    buffered_ids = {v.id for v in buffered}
    last_use: dict[int, int] = {}
    for index, group in enumerate(groups):
        for op in group:
            for value in op.inputs:
                last_use[root(value.id)] = index
    end = len(groups)
    for vid in keep:
        last_use[root(vid)] = end
    slots: list[tuple[str, tuple]] = []
    slot_of: dict[int, int] = {}
    free: list[int] = []
    releases: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        for slot in releases.pop(index - 1, []):
            free.append(slot)
        for op in group:
            for value in op.outputs:
                if value.id not in buffered_ids:
                    continue
                key = (value.dtype, tuple(value.shape))
                slot = next((s for s in free if slots[s] == key), None)
                if slot is None:
                    slots.append(key)
                    slot = len(slots) - 1
                else:
                    free.remove(slot)
                slot_of[value.id] = slot
                # unread outputs are freed after their own group
                releases.setdefault(max(last_use.get(value.id, index), index), []).append(slot)
    return BufferPlan(slots, slot_of)
