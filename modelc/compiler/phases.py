"""The training graph in two phases, for data-parallel training.

A training graph is forward, loss, backward, then the optimizer (`autodiff.py`).
With several processes, each computes the gradients of its share of the batch,
the gradients are summed across processes, and every process applies the same
update; so the graph is cut where the optimizer begins:

- the gradient phase: every op up to the first one that reads a finished
  gradient (what an update op takes as its gradient). Batch normalization's
  moving statistics are written here, from this process's rows.
- the update phase: the rest: the norms that clip gradients (they must be of
  the summed gradient) and the update ops. They read only finished gradients,
  parameters, optimizer state, the step counter and one another's outputs.

What crosses between the two is `exchanged`: the finished gradients, then the
moving statistics (so each process can carry the average of every process's).
"""
from __future__ import annotations

from dataclasses import dataclass

from modelc.compiler.ir import Graph, Value


@dataclass
class Phases:
    split: int                  # graph.ops[:split] compute gradients, graph.ops[split:] update
    gradients: list[Value]      # the finished gradients, in the order the updates read them
    statistics: list[Value]     # parameters the gradient phase updates in place (role "stat")

    @property
    def exchanged(self) -> list[Value]:
        return self.gradients + self.statistics


def phases(graph: Graph) -> Phases:
    """Cut the training graph `graph` before its optimizer. An AssertionError if the graph is not
    forward-then-update (a compiler bug, never a user's mistake)."""
    updates = [op for op in graph.ops if op.writes and any(v.role == "param" for v in op.writes)]
    gradients = [op.inputs[1] for op in updates]
    finished = {v.id for v in gradients}
    split = next((i for i, op in enumerate(graph.ops) if any(v.id in finished for v in op.inputs)),
                 len(graph.ops))
    allowed = finished | {v.id for v in graph.params + graph.state}
    allowed |= {v.id for v in graph.inputs if v.role == "scalar"}
    for op in graph.ops[split:]:
        outside = [v for v in op.inputs if v.id not in allowed]
        assert not outside, f"update phase op {op.prim} reads {outside} from the gradient phase"
        allowed |= {v.id for v in op.outputs}
    stats = {v.id: v for op in graph.ops[:split] for v in op.writes if v.role == "stat"}
    return Phases(split, gradients, list(stats.values()))
