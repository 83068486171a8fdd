"""The `numpy` target: interprets the IR op by op with the primitives' reference
implementations. It is slow and obviously right: the ground truth the cpu and
cuda targets are tested against."""
from __future__ import annotations

import numpy as np

from modelc.compiler.codegen import Backend
from modelc.compiler.formulas import LR_SCALE, LR_SCALE_DEFAULT
from modelc.compiler.ir import Graph
from modelc.compiler.primitives import PRIMITIVES


def run_graph(graph: Graph, env: dict[int, np.ndarray], lr_scale: float = LR_SCALE_DEFAULT) -> dict[str, np.ndarray]:
    """Execute `graph` with `env` (value id -> array) holding its inputs, params and state;
    the optimizer updates scale their learning rate by `lr_scale`."""
    for op in graph.ops:
        attrs = {**op.attrs, LR_SCALE: lr_scale} if PRIMITIVES[op.prim].kind == "update" else op.attrs
        result = PRIMITIVES[op.prim].impl(*(env[v.id] for v in op.inputs), **attrs)
        if not op.outputs:
            continue
        if len(op.outputs) == 1:
            result = (result,)
        for value, array in zip(op.outputs, result):
            env[value.id] = array
    return {key: env[v.id] for key, v in graph.outputs.items()}


class NumpyBackend(Backend):
    name = "numpy"
    compiled = True     # it interprets the IR: nothing to compile

    def __init__(self, program, dtype=np.float32):
        super().__init__(program)
        from modelc.threads import configure_threads
        configure_threads()   # a threaded BLAS collapses on busy small machines
        self.dtype = dtype
        self.params: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}

    def load_state(self, params, state):
        self.params = {k: np.array(v, dtype=self.dtype) for k, v in params.items()}
        self.state = {k: np.array(v, dtype=self.dtype) for k, v in state.items()}

    def read_state(self):
        return ({k: v.copy() for k, v in self.params.items()}, {k: v.copy() for k, v in self.state.items()})

    def _env(self, graph: Graph) -> dict[int, np.ndarray]:
        env = {p.id: self.params[p.name] for p in graph.params}
        env.update({s.id: self.state[s.name] for s in graph.state})
        return env

    def _feed(self, graph: Graph, env, x, y=None, step=None):
        for value in graph.inputs:
            if value.role == "input":
                env[value.id] = x.astype(self.dtype, copy=False)
            elif value.role == "target":
                env[value.id] = y if y.dtype.kind == "i" else y.astype(self.dtype, copy=False)
            elif value.role == "scalar":    # the update counter, found by its role (never by name)
                env[value.id] = np.int64(step)
        return env

    def train(self, data, order, batch_size, first_batch, last_batch, step, lr_scale=LR_SCALE_DEFAULT):
        x, y = data
        graph = self.program.train
        totals = np.zeros(len(self.program.result_names))
        for b in range(first_batch, last_batch):
            index = order[b * batch_size:(b + 1) * batch_size]
            env = self._feed(graph, self._env(graph), x[index], y[index], step + b - first_batch)
            out = run_graph(graph, env, lr_scale)
            totals += [float(out[k]) * len(index) for k in self.program.result_names]
        return totals

    def evaluate(self, data, batch_size):
        x, y = data
        graph = self.program.evaluate
        totals = np.zeros(len(self.program.result_names))
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            out = run_graph(graph, self._feed(graph, self._env(graph), xb, yb))
            totals += [float(out[k]) * len(xb) for k in self.program.result_names]
        return totals

    def predict(self, data, batch_size):
        x = data[0]
        graph = self.program.predict
        parts = [run_graph(graph, self._feed(graph, self._env(graph), x[s:s + batch_size]))["prediction"]
                 for s in range(0, len(x), batch_size)]
        return np.concatenate(parts).astype(np.float32, copy=False)
