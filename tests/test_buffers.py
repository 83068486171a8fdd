"""The buffer-reuse pass: temporaries share memory only when their lifetimes
cannot overlap, checked on every graph of every example spec."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelc.compiler.build import build_program
from modelc.compiler.codegen.cpu_formula_calls import Formulas
from modelc.compiler.codegen.cpu_plan import lower_graph
from modelc.compiler.passes import plan_buffers
from modelc.grammar.parser import parse_file

SPECS = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.model"))


def _plans(spec):
    program = build_program(parse_file(spec))
    for kind in ("train", "evaluate", "predict"):
        graph = getattr(program, kind)
        code = lower_graph(graph, Formulas(Path(os.devnull)))   # nothing kept on disk
        outputs = {v.id for v in graph.outputs.values()}
        yield kind, code, code.views, outputs, plan_buffers(code.groups, code.buffers, code.views, outputs)


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_live_values_never_share_a_buffer(spec):
    for kind, code, views, outputs, plan in _plans(spec):
        def root(vid):
            while vid in views:
                vid = views[vid]
            return vid
        born, last = {}, {}
        for index, group in enumerate(code.groups):
            for op in group:
                for v in op.inputs:
                    last[root(v.id)] = index
                for v in op.outputs:
                    born.setdefault(v.id, index)
        for vid in outputs:
            last[root(vid)] = len(code.groups)
        values = code.buffers
        for a in values:
            for b in values:
                if a.id >= b.id or plan.slot_of[a.id] != plan.slot_of[b.id]:
                    continue
                a_span = (born[a.id], last.get(a.id, born[a.id]))
                b_span = (born[b.id], last.get(b.id, born[b.id]))
                overlap = a_span[0] <= b_span[1] and b_span[0] <= a_span[1]
                assert not overlap, f"{kind}: %{a.name} {a_span} and %{b.name} {b_span} share a buffer"
                assert (a.dtype, a.shape) == (b.dtype, b.shape)


def test_mnist_training_reuses_buffers():
    plans = {kind: plan for kind, _, _, _, plan in _plans(SPECS[[s.stem for s in SPECS].index("mnist")])}
    train = plans["train"]
    assert len(train.slots) < len(train.slot_of)
