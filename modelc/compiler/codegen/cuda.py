"""The `cuda` target's backend: the kernels of a plan (`cuda_planner`) launched
with numba.cuda, with everything resident on the device.

Parameters, optimizer state and every intermediate buffer are allocated once
(buffers for the largest batch seen); `upload` copies a data set to the device
once; `train` copies the epoch's order once, launches a fixed sequence of kernels
per batch (no host synchronisation, no readback inside the loop: the per-step
scalars are computed on the host from the step number and passed as kernel
arguments), and reads the loss and metric sums back once at the end.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from modelc.compiler.codegen import Backend
from modelc.compiler.codegen.cuda_env import SimulatorPace, cuda_available, prepare_simulator, simulator_enabled
from modelc.compiler.codegen.cuda_epoch import arena_of, epoch_for, prediction_output
from modelc.compiler.codegen.cuda_module import compiled_epoch, compiled_kernels
from modelc.compiler.codegen.cuda_plan import GPU_CONFIG, PARAM_BYTES, SIM_CONFIG, LaunchConfig, Plan, size_of
from modelc.compiler.codegen.cuda_planner import plans_for
from modelc.compiler.formulas import LR_SCALE_DEFAULT
from modelc.compiler.ir import I64
from modelc.errors import ModelcError


INFERENCE_ROWS = 4096            # evaluate and predict: rows per batch on the device, at least ...
INFERENCE_BYTES = 256 * 2 ** 20  # ... unless their buffers would pass this


def _unavailable_error(reason: str) -> ModelcError:
    return ModelcError(f"the cuda target needs an NVIDIA GPU with its driver: {reason}",
                       hint="run 'modelc doctor' to see what was found, or use --target cpu")


@dataclass
class CudaData:
    """A data set resident on the device: x flattened per sample, y as int64 labels
    or float32 targets."""
    x: object
    y: object
    n: int


def carve(cuda, sizes: dict, dtype, stream) -> tuple[object, dict, dict]:
    """One device array of `dtype` holding arrays of `sizes` (key -> elements) one after the
    other: the array, each key's (start, end) in it, and each key's view of it."""
    arena = cuda.device_array(max(1, sum(sizes.values())), dtype=dtype, stream=stream)
    spans, views, start = {}, {}, 0
    for key, n in sizes.items():
        spans[key] = (start, start + n)
        views[key] = arena[start:start + n]
        start += n
    return arena, spans, views


class DeviceGraph:
    """A plan bound to device memory: its buffers allocated, its epoch kernel or its kernels compiled
    when first run.
    `backend` provides the stream and the resident weights (`stream`, `d_params`,
    `d_state`): a `CudaBackend`, or `cuda_harness`'s stand-in."""

    def __init__(self, backend, plan: Plan, epoch: bool | None = None):
        from numba import cuda
        self.backend, self.plan, self.cuda = backend, plan, cuda
        self._kernels = None      # compiled when first launched one by one (`kernels`)
        self.capacity = 0
        self.buffers: dict[int, object] = {}
        self.values = {v.id: v for v in plan.graph.values()}
        self.bound = None
        self.simulated = simulator_enabled()
        self._configs: dict[int, list] = {}
        # MODELC_CUDA_SYNC=1: wait for each kernel, so a fault names it instead of surfacing
        # at the epoch's end (a debugging mode: every launch then costs a round trip)
        self.sync = os.environ.get("MODELC_CUDA_SYNC") == "1"
        self.output = prediction_output(plan)
        # the epoch kernel (cuda_epoch), unless `epoch` is False (default: MODELC_CUDA_EPOCH, "1");
        # `sync` launches kernel by kernel too
        if epoch is None:
            epoch = os.environ.get("MODELC_CUDA_EPOCH", "1") != "0"
        self.epoch = epoch_for(plan) if epoch else "one launch per kernel was asked for"
        self._epoch_kernel = None
        self._span_table = self._table = None
        self._launched = False
        self.arenas: dict[str, object] = {}
        self.spans: dict[int, tuple[int, int]] = {}

    @property
    def kernels(self) -> list:
        """The plan's kernels as numba dispatchers, compiled (or read from numba's cache) the first
        time they are launched one by one: the epoch kernel does not need them."""
        if self._kernels is None:
            self._kernels = compiled_kernels(self.plan)
        return self._kernels

    def ensure(self, batch: int):
        """Buffers for `batch` rows; reallocated only when a larger batch arrives."""
        if batch <= self.capacity:
            return
        self.arenas, self.spans = {}, {}
        for kind, dtype in (("f32", np.float32), ("i64", np.int64)):
            sizes = {vid: max(1, buf.size(batch)) for vid, buf in self.plan.buffers.items()
                     if arena_of(self.plan, vid) == kind}
            if sizes:   # one allocation per dtype; each buffer a view of it (the epoch kernel takes the arena)
                self.arenas[kind], spans, views = carve(self.cuda, sizes, dtype, self.backend.stream)
                self.spans.update(spans)
                self.buffers.update(views)
        self.capacity = batch
        self.bound = self._span_table = None

    def _bind(self):
        """Resolve every argument of the kernels launched one by one that does not change per
        step, once."""
        b = self.backend
        for k in self.plan.oversized():
            reason = self.epoch if isinstance(self.epoch, str) else "MODELC_CUDA_SYNC=1"
            raise ModelcError(f"the cuda kernel {k.name} takes {k.param_bytes()} bytes of arguments, more than "
                              f"a launch's {PARAM_BYTES}: this model runs on the GPU only in the epoch kernel, "
                              f"which is not used here ({reason})",
                              hint="unset MODELC_CUDA_EPOCH and MODELC_CUDA_SYNC, or use --target cpu")
        bound = []
        for k in self.plan.kernels:
            static, dynamic = [], []
            for i, p in enumerate(k.params):
                src = p.source
                if isinstance(src, tuple) and src[0] == "value":
                    vid = src[1]
                    if vid in self.buffers:
                        static.append(self.buffers[vid])
                        continue
                    v = self.values[vid]
                    store = b.d_params if v.role in ("param", "stat") else b.d_state
                    if v.name not in store:
                        raise ModelcError(f"the cuda backend has no value for {v.role} '{v.name}'",
                                          hint="load the weights (load_state) before running")
                    static.append(store[v.name])
                else:
                    static.append(None)
                    dynamic.append((i, src))
            bound.append((static, dynamic))
        self.bound = bound

    def _launchers(self, nb: int) -> list:
        """Configured launchers for a batch of nb rows, made once per batch size
        (a full batch and the last, partial one). numba warns about grids under
        128 blocks; small batches are small grids by design, so not here."""
        stream = self.backend.stream
        if self.simulated:   # the simulator's kernel[...] reconfigures and returns the kernel itself
            return [disp[k.grid_dims(nb), k.block, stream] for k, disp in zip(self.plan.kernels, self.kernels)]
        if nb not in self._configs:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Grid size")
                self._configs[nb] = [disp[k.grid_dims(nb), k.block, stream]
                                     for k, disp in zip(self.plan.kernels, self.kernels)]
        return self._configs[nb]

    def launch(self, data: CudaData, idx, off: int, nb: int, step: int, sums,
               lr_scale: float = LR_SCALE_DEFAULT, events: list | None = None) -> int:
        """Queue one batch's kernels on the backend's stream; returns the launch count. With
        `events` (a list), a pair of CUDA events recorded around each kernel is appended to it,
        (kernel name, start, end), for timing each kernel on the device (bench/gpu_check.py)."""
        if self.bound is None:
            self._bind()
        scalars = [s.values(step, lr_scale) for s in self.plan.step_scalars]
        launchers = self._launchers(nb)
        for n, (static, dynamic) in enumerate(self.bound):
            args = list(static)
            for i, src in dynamic:
                if src == "off":
                    args[i] = off
                elif src == "nb":
                    args[i] = nb
                elif src == "step":
                    args[i] = step
                elif src == "idx":
                    args[i] = idx
                elif src == "sums":
                    args[i] = sums
                elif src[0] == "data":
                    args[i] = data.x if src[1] == "x" else data.y
                elif src[0] == "opt":
                    args[i] = scalars[src[1]][src[2]]
            if events is not None:
                start, end = self.cuda.event(), self.cuda.event()
                start.record(self.backend.stream)
                launchers[n](*args)
                end.record(self.backend.stream)
                events.append((self.plan.kernels[n].name, start, end))
                continue
            if not self.sync:
                launchers[n](*args)
                continue
            try:
                launchers[n](*args)
                self.backend.stream.synchronize()
            except Exception as err:     # noqa: BLE001 - a device fault, named with where it happened
                k = self.plan.kernels[n]
                raise ModelcError(f"cuda kernel {k.name} failed (grid {k.grid_dims(nb)}, block {k.block}, "
                                  f"{nb} rows from row {off}, update {step}): {type(err).__name__}: {err}",
                                  hint="run 'modelc doctor'; if it is fine, this is a bug in modelc's cuda "
                                       "target: please report it with this message") from None
        return len(launchers)


    def run(self, data: CudaData, idx, s0: int, s1: int, batch: int, n: int, step0: int, sums,
            lr_scale: float = LR_SCALE_DEFAULT, out=None):
        """Batches s0..s1-1 of `batch` rows out of `n` (the last one short), update numbers from
        step0: one launch of the epoch kernel when the plan has one, else kernel by kernel.
        `out` (predict): the output array the prediction rows are copied into."""
        s1 = min(s1, -(-n // batch))
        if s1 <= s0:
            return
        if self._per_kernel():
            for s in range(s0, s1):
                off = s * batch
                nb = min(batch, n - off)
                self.launch(data, idx, off, nb, step0 + s - s0, sums, lr_scale)
                if out is not None:
                    vid, per = self.output
                    out[off * per:(off + nb) * per].copy_to_device(self.buffers[vid][:nb * per],
                                                                   stream=self.backend.stream)
            return
        if self.backend.d_weights is None:
            raise ModelcError("the cuda backend has no weights yet", hint="load the weights (load_state) before running")
        if self._span_table is None:     # where each array lies in its arena, until the buffers move
            spans = [self._span(src[1]) for src in self.epoch.arrays]
            self._span_table = self.cuda.to_device(np.array(spans or [(0, 0)], np.int64).reshape(-1),
                                                   stream=self.backend.stream)
        self._table = self._step_table(s1 - s0, step0, lr_scale)      # alive while the kernel may read it
        given = {"s0": s0, "s1": s1, "batch": batch, "n": n, "step0": step0, "idx": idx, "sums": sums,
                 "tab": self._table, "spans": self._span_table, ("out",): out, ("data", "x"): data.x,
                 ("data", "y"): data.y, ("arena", "weights"): self.backend.d_weights,
                 ("arena", "f32"): self.arenas.get("f32"), ("arena", "i64"): self.arenas.get("i64")}
        args = [given[p.source] for p in self.epoch.params]
        blocks = 1 if self.simulated else min(self._coop_blocks, self.epoch.blocks_needed(self.plan.kernels, batch))
        with warnings.catch_warnings():     # a small GPU's grid is small by design: not here
            warnings.filterwarnings("ignore", message="Grid size")
            launcher = self._epoch_kernel[blocks, self.epoch.threads, self.backend.stream]
        if self._launched:
            launcher(*args)
            return
        try:      # the first launch: one the device refuses (a cooperative launch it cannot make) ran nothing
            launcher(*args)
        except Exception as err:     # noqa: BLE001 - kernel by kernel works wherever launches do
            self._give_up(err)
            self.run(data, idx, s0, s1, batch, n, step0, sums, lr_scale, out)
            return
        self._launched = True

    def _step_table(self, steps: int, step0: int, lr_scale: float):
        """The per-step scalars of `steps` updates from step0 on the device (float32, a row per
        step, `Epoch.columns`), computed on the host as the reference computes them; None
        when no kernel takes any."""
        if not self.epoch.width:
            return None
        rows = np.zeros((steps, self.epoch.width), np.float32)
        for r in range(steps):
            for gi, (first, count) in self.epoch.columns.items():
                rows[r, first:first + count] = self.plan.step_scalars[gi].values(step0 + r, lr_scale)[:count]
        return self.cuda.to_device(rows.reshape(-1), stream=self.backend.stream)

    def _per_kernel(self) -> bool:
        """Whether batches run kernel by kernel (no epoch kernel, or MODELC_CUDA_SYNC=1)."""
        return self.sync or isinstance(self.epoch, str) or not self._epoch_ready()

    def _epoch_ready(self) -> bool:
        """Compile the epoch kernel once; a device that cannot run it (no cooperative launch, too
        few resident blocks) falls back to launching kernel by kernel, saying so once."""
        if self._epoch_kernel is not None:
            return True
        try:
            self._epoch_kernel = compiled_epoch(self.plan, self.epoch)
            if not self.simulated:
                overload = next(iter(self._epoch_kernel.overloads.values()))
                self._coop_blocks = overload.max_cooperative_grid_blocks(self.epoch.threads)
                if self._coop_blocks < 1:
                    raise RuntimeError("not one block of it can be resident on this device")
        except Exception as err:     # noqa: BLE001 - any failure here leaves the per-kernel path, which works
            self._give_up(err)
            return False
        return True

    def _give_up(self, err: Exception):
        """Say once why the epoch kernel is not used, and launch kernel by kernel from now on."""
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        warnings.warn(f"modelc: the cuda epoch kernel of '{self.plan.graph.name}' is not used ({reason}); "
                      f"launching its kernels one by one", stacklevel=3)
        self.epoch = reason

    def _span(self, vid: int) -> tuple[int, int]:
        """Where value `vid` lies in its arena: a buffer in the graph's, a weight in the backend's."""
        if vid in self.spans:
            return self.spans[vid]
        return self.backend.spans[self.values[vid].name]


class CudaBackend(Backend):
    """The Backend interface on one CUDA device (or Numba's simulator)."""
    name = "cuda"

    def __init__(self, program, config: LaunchConfig | None = None, epoch: bool | None = None):
        """`epoch`: run each call's batches in one epoch kernel where the plan allows (True), or
        launch kernel by kernel (False); None reads MODELC_CUDA_EPOCH (default 1)."""
        super().__init__(program)
        self._use_epoch = epoch
        ok, reason = cuda_available()
        if not ok:
            raise _unavailable_error(reason)
        from numba import cuda
        self._cuda = cuda
        prepare_simulator()
        self._pace = SimulatorPace(simulator_enabled())
        self.config = config or (SIM_CONFIG if simulator_enabled() else GPU_CONFIG)
        self.plans = plans_for(program, self.config)       # codegen errors surface here
        self._graphs: dict[str, DeviceGraph] = {}
        self.stream = cuda.stream()
        self.d_params: dict[str, object] = {}
        self.d_state: dict[str, object] = {}
        self.d_weights = None
        self.spans: dict[str, tuple[int, int]] = {}
        self._shapes: dict[str, tuple] = {}
        self._order = None

    def _graph(self, name: str) -> DeviceGraph:
        if name not in self.plans:
            raise ModelcError(f"this model has no {name} graph (no loss declared?)")
        if name not in self._graphs:
            self._graphs[name] = DeviceGraph(self, self.plans[name], epoch=self._use_epoch)
        return self._graphs[name]

    # state -------------------------------------------------------------
    def _put(self, store: dict, name: str, array: np.ndarray, shape: tuple):
        host = np.ascontiguousarray(array, dtype=np.float32)
        if tuple(host.shape) != tuple(shape):
            raise ModelcError(f"'{name}' has shape {list(host.shape)}, the model expects {list(shape)}")
        store[name].copy_to_device(host.reshape(-1), stream=self.stream)

    def _allocate_weights(self):
        """One device array for every parameter, statistic and optimizer state array, each a view
        of it (`spans`: name -> where), so the epoch kernel takes the weights as one argument."""
        values = [i.value for i in self.program.params] + list(self.program.state)
        self._shapes.update((v.name, tuple(v.shape)) for v in values)
        self.d_weights, self.spans, views = carve(self._cuda, {v.name: size_of(v.shape) for v in values},
                                                  np.float32, self.stream)
        self.d_params.update((i.value.name, views[i.value.name]) for i in self.program.params)
        self.d_state.update((v.name, views[v.name]) for v in self.program.state)

    def load_state(self, params, state):
        if self.d_weights is None:
            self._allocate_weights()
        for info in self.program.params:
            v = info.value
            if v.name not in params:
                raise ModelcError(f"no value for the parameter '{v.name}'")
            self._put(self.d_params, v.name, params[v.name], v.shape)
        for v in self.program.state:
            value = state.get(v.name) if state else None
            self._put(self.d_state, v.name, np.zeros(v.shape, np.float32) if value is None else value, v.shape)
        self.stream.synchronize()

    def read_state(self):
        def down(store):
            return {k: a.copy_to_host(stream=self.stream).reshape(self._shapes[k]) for k, a in store.items()}
        params, state = down(self.d_params), down(self.d_state)
        self.stream.synchronize()
        return params, state

    # data --------------------------------------------------------------
    def upload(self, x, y=None):
        x = np.asarray(x)
        n = len(x)
        sample = self.program.input.sample_size()
        flat = np.ascontiguousarray(x, dtype=np.float32).reshape(n, -1)
        if flat.shape[1] != sample:
            raise ModelcError(f"the input has {flat.shape[1]} values per sample, the model expects {sample} "
                              f"(shape {list(self.program.input.shape[1:])})")
        dx = self._cuda.to_device(flat.reshape(-1), stream=self.stream)
        dy = None
        if y is not None:
            target = self.program.target.value if self.program.target else None
            dtype = np.int64 if target is not None and target.dtype == I64 else np.float32
            yy = np.ascontiguousarray(y, dtype=dtype).reshape(n, -1)
            if target is not None and yy.shape[1] != target.sample_size():
                raise ModelcError(f"the targets have {yy.shape[1]} values per sample, the model expects "
                                  f"{target.sample_size()}")
            dy = self._cuda.to_device(yy.reshape(-1), stream=self.stream)
        return CudaData(dx, dy, n)

    def _resident(self, data) -> CudaData:
        if isinstance(data, CudaData):
            return data
        x, y = data if isinstance(data, tuple) else (data, None)
        return self.upload(x, y)

    def _order_on_device(self, order):
        """The epoch's order on the device: copied once per epoch, not per batch. The
        runtime calls `train` in chunks when a progress bar is live, with the same
        order; its device copy is reused while the contents are unchanged."""
        order = np.ascontiguousarray(order, dtype=np.int64)
        last = self._order
        if last is not None and last[0].shape == order.shape and np.array_equal(last[0], order):
            return last[1]
        device = self._cuda.to_device(order, stream=self.stream)
        self._order = (order.copy(), device)
        return device

    def _sums(self, plan: Plan):
        return self._cuda.to_device(np.zeros(max(1, plan.n_sums), np.float64), stream=self.stream)

    def _synchronized(self, array) -> np.ndarray:
        """`array` on the host once the call's kernels have run: a kernel that faulted is reported
        here, at the call's first synchronisation, with how to find it."""
        try:
            host = array.copy_to_host(stream=self.stream)
            self.stream.synchronize()
        except Exception as err:     # noqa: BLE001 - a device fault, said with what to do next
            raise ModelcError(f"the GPU failed while running this call's kernels: {type(err).__name__}: {err}",
                              hint="run again with MODELC_CUDA_SYNC=1 to stop at the kernel that fails (one "
                                   "launch per kernel); run 'modelc doctor'; if both are fine, this is a bug in "
                                   "modelc's cuda target: please report it") from None
        return host

    def _results(self, plan: Plan, sums) -> np.ndarray:
        host = self._synchronized(sums)
        out = []
        for name in self.program.result_names:
            kind, slot = plan.outputs[name]
            out.append(float(host[slot]))
        return np.array(out, dtype=np.float64)

    # running -----------------------------------------------------------
    def train(self, data, order, batch_size, first_batch, last_batch, step, lr_scale=LR_SCALE_DEFAULT):
        data = self._resident(data)
        graph = self._graph("train")
        rows, most = max(1, min(batch_size, len(order))), graph.plan.max_rows()
        if rows > most:
            raise ModelcError(f"a batch of {rows:,} rows is more than one launch of this model's kernels can "
                              f"take on the GPU ({most:,}: a grid has at most 65,535 blocks along y)",
                              hint=f"train with a batch of {most:,} or less")
        graph.ensure(rows)     # buffers by the data's size, not the batch
        idx = self._order_on_device(order)
        sums = self._sums(graph.plan)
        with self._pace:
            graph.run(data, idx, first_batch, last_batch, batch_size, len(order), step, sums, lr_scale)
        return self._results(graph.plan, sums)

    @staticmethod
    def _inference_batch(plan: Plan, batch_size: int, n: int) -> int:
        """Rows per batch for evaluate and predict: their results do not depend on the batch, so
        the device takes the larger of the batch given and INFERENCE_ROWS (fewer when their
        buffers would pass INFERENCE_BYTES), within one launch's limit and the data."""
        per_row = sum(b.nbytes(1) for b in plan.buffers.values() if b.batched)
        rows = max(batch_size, min(INFERENCE_ROWS, INFERENCE_BYTES // max(1, per_row)))
        return max(1, min(rows, plan.max_rows(), n))

    def evaluate(self, data, batch_size):
        data = self._resident(data)
        graph = self._graph("evaluate")
        batch_size = self._inference_batch(graph.plan, batch_size, data.n)
        graph.ensure(batch_size)
        sums = self._sums(graph.plan)
        with self._pace:
            graph.run(data, None, 0, -(-data.n // batch_size), batch_size, data.n, 0, sums)
        return self._results(graph.plan, sums)

    def predict(self, data, batch_size):
        data = self._resident(data)
        graph = self._graph("predict")
        batch_size = self._inference_batch(graph.plan, batch_size, data.n)
        graph.ensure(batch_size)
        per = graph.output[1]
        result = self._cuda.device_array(max(1, data.n * per), dtype=np.float32, stream=self.stream)
        with self._pace:
            graph.run(data, None, 0, -(-data.n // batch_size), batch_size, data.n, 0, None, out=result)
        host = self._synchronized(result)
        return host[:data.n * per].reshape((data.n,) + tuple(self.program.output.shape[1:]))

    @property
    def launch_mode(self) -> str:
        """How the training graph's batches run: 'epoch kernel' (one launch per call) or
        'kernel by kernel' (and why)."""
        epoch = self._graph("train").epoch
        return f"kernel by kernel ({epoch})" if isinstance(epoch, str) else "epoch kernel"

    @property
    def kernels_per_step(self) -> int | None:
        return len(self.plans["train"].kernels) if "train" in self.plans else None
