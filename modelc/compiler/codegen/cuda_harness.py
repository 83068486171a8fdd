"""One graph run once on the device, for tests: `run_graph` binds any graph of the
IR (not only a program's three) to device memory, runs one batch and returns
every output, parameter and state array, to be checked against
`numpy_target.run_graph` (tests/cuda_sim_check.py does, for every lowering).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelc.compiler.codegen.cuda import CudaData, DeviceGraph
from modelc.compiler.codegen.cuda_env import SimulatorPace, prepare_simulator, simulator_enabled
from modelc.compiler.codegen.cuda_plan import GPU_CONFIG, SIM_CONFIG, LaunchConfig
from modelc.compiler.codegen.cuda_planner import plan_graph
from modelc.compiler.ir import I64


@dataclass
class _Resident:
    """What a DeviceGraph needs from its owner: a stream and the resident weights."""
    stream: object
    d_params: dict
    d_state: dict


def _to_device(cuda, arrays: dict) -> dict:
    return {k: cuda.to_device(np.ascontiguousarray(v, np.float32).reshape(-1)) for k, v in arrays.items()}


def run_graph(graph, feeds: dict, params: dict, state: dict, step: int = 0,
              config: LaunchConfig | None = None, gather: bool = True) -> tuple[dict, dict, dict]:
    """Run any graph once on the device: `feeds` maps data input names to arrays
    (one batch). Returns (outputs, params, state) as host arrays; batch means come
    back as means, batched values as arrays. Used to check each lowering against
    `numpy_target.run_graph`."""
    from numba import cuda
    config = config or (SIM_CONFIG if simulator_enabled() else GPU_CONFIG)
    plan = plan_graph(graph, config, gather=gather)

    host = _Resident(cuda.stream(), _to_device(cuda, params), _to_device(cuda, state))
    dg = DeviceGraph(host, plan)
    xs = [v for v in graph.inputs if v.role == "input"]
    ys = [v for v in graph.inputs if v.role == "target"]
    nb = len(next(iter(feeds.values())))
    order = np.arange(nb, dtype=np.int64)[::-1].copy() if gather else None   # exercise the gather
    def put(values, dtype):
        if not values:
            return None
        a = np.asarray(feeds[values[0].name])
        if gather:
            a = a[order]       # stored in reverse; the index puts rows back in order
        return cuda.to_device(np.ascontiguousarray(a, dtype=dtype).reshape(-1))
    ydtype = np.int64 if ys and ys[0].dtype == I64 else np.float32
    data = CudaData(put(xs, np.float32), put(ys, ydtype), nb)
    dg.ensure(nb)
    sums = cuda.to_device(np.zeros(max(1, plan.n_sums), np.float64))
    idx = cuda.to_device(order) if gather else None
    prepare_simulator()
    with SimulatorPace(simulator_enabled()):
        dg.launch(data, idx, 0, nb, step, sums)
    host_sums = sums.copy_to_host()
    outputs = {}
    for key, (kind, ref) in plan.outputs.items():
        if kind == "sum":
            outputs[key] = np.float32(host_sums[ref] / nb)
        else:
            v = plan.buffers[ref]
            n = v.size(nb)
            shape = graph.outputs[key].shape
            shape = tuple(nb if d == "B" else d for d in shape)
            outputs[key] = dg.buffers[ref].copy_to_host()[:n].reshape(shape)
    shapes = {v.name: v.shape for v in graph.values()}
    p_out = {k: a.copy_to_host().reshape(shapes.get(k, (-1,))) for k, a in host.d_params.items()}
    s_out = {k: a.copy_to_host().reshape(shapes.get(k, (-1,))) for k, a in host.d_state.items()}
    return outputs, p_out, s_out

