"""The `numpy` target: interprets the IR op by op with the primitives' reference
implementations. It is slow and obviously right: the ground truth the cpu and
cuda targets are tested against."""
from __future__ import annotations

import numpy as np

from modelc.compiler.codegen import Backend
from modelc.compiler.formulas import LR_SCALE, LR_SCALE_DEFAULT
from modelc.compiler.ir import Graph
from modelc.compiler.phases import phases
from modelc.compiler.primitives import PRIMITIVES


def run_graph(graph: Graph, env: dict[int, np.ndarray], lr_scale: float = LR_SCALE_DEFAULT) -> dict[str, np.ndarray]:
    """Execute `graph` with `env` (value id -> array) holding its inputs, params and state;
    the optimizer updates scale their learning rate by `lr_scale`."""
    run_ops(graph.ops, env, lr_scale)
    return {key: env[v.id] for key, v in graph.outputs.items()}


def run_ops(ops, env: dict[int, np.ndarray], lr_scale: float = LR_SCALE_DEFAULT, first_row: int = 0) -> None:
    """Execute `ops` in order on `env`; `first_row` is where the batch starts in the global batch."""
    for op in ops:
        primitive = PRIMITIVES[op.prim]
        attrs = op.attrs
        if primitive.kind == "update":
            attrs = {**attrs, LR_SCALE: lr_scale}
        elif primitive.by_row:
            attrs = {**attrs, "first_row": first_row}
        result = primitive.impl(*(env[v.id] for v in op.inputs), **attrs)
        if not op.outputs:
            continue
        if len(op.outputs) == 1:
            result = (result,)
        for value, array in zip(op.outputs, result):
            env[value.id] = array


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
        self._pending: dict[int, np.ndarray] | None = None     # data-parallel: the gradient phase's values
        self._cut = phases(program.train) if program.train is not None else None

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

    def gradient_step(self, data, rows, first_row, step):
        x, y = data
        graph = self.program.train
        env = self._feed(graph, self._env(graph), x[rows], y[rows], step)
        run_ops(graph.ops[:self._cut.split], env, first_row=first_row)
        self._pending = env
        return np.array([float(env[graph.outputs[k].id]) * len(rows) for k in self.program.result_names])

    def _exchanged(self):
        return [self._pending[v.id] for v in self._cut.exchanged]

    def update_step(self, step, lr_scale=LR_SCALE_DEFAULT):
        run_ops(self.program.train.ops[self._cut.split:], self._pending, lr_scale)

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
