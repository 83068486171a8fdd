"""The `cuda` target: the kernels of `cuda_kernels` launched with numba.cuda, with
everything resident on the device.

Parameters, optimizer state and every intermediate buffer are allocated once
(buffers for the largest batch seen); `upload` copies a data set to the device
once; `train` copies the epoch's order once, launches a fixed sequence of kernels
per batch (no host synchronisation, no readback inside the loop: the per-step
scalars are computed on the host from the step number and passed as kernel
arguments), and reads the loss and metric sums back once at the end.

Importing this module never touches a GPU, so PTX can be emitted (`emit_ptx`)
and resources reported (`link_report`) on machines without one.
"""
from __future__ import annotations

import importlib.util
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelc.compiler.codegen import Backend
from modelc.compiler.codegen.cuda_kernels import (GPU_CONFIG, SIM_CONFIG, CudaCodegenError, Kernel,
                                                  LaunchConfig, Plan, plan_graph)
from modelc.compiler.ir import I64
from modelc.errors import ModelcError
from modelc.doctor import simulator_enabled

__all__ = ["CudaBackend", "CudaCodegenError", "emit_ptx", "plan_ptx", "link_report", "plans_for",
           "simulator_enabled", "plan_graph",
           "GPU_CONFIG", "SIM_CONFIG", "LaunchConfig", "run_graph"]


def _cache_dir() -> Path:
    """<modelc's cache folder>/cuda (see modelc.files.cache_root)."""
    from modelc.files import cache_root
    path = cache_root() / "cuda"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    from modelc.files import atomic_write
    atomic_write(path, data, make_folder=True)


_MODULES: dict[str, object] = {}


def load_module(plan: Plan):
    """Import the plan's source from a file named by its hash, so numba's on-disk
    cache (cache=True) can find it again on the next run."""
    key = plan.source_hash
    if key in _MODULES:
        return _MODULES[key]
    try:
        path = _cache_dir() / f"modelc_cuda_{key}.py"
        if not path.exists() or path.read_text() != plan.module_source:
            _atomic_write(path, plan.module_source.encode())
    except OSError as err:
        raise ModelcError(f"cannot write the generated kernels to the cache folder: {err}",
                          hint="set MODELC_CACHE_DIR to a writable folder") from None
    name = f"modelc_cuda_{key}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _MODULES[key] = module
    return module


def kernel_signature(kernel: Kernel):
    """The explicit numba signature of a kernel, from its parameters' IR types."""
    from numba import types
    names = {"f32[]": types.float32[::1], "i64[]": types.int64[::1], "f64[]": types.float64[::1],
             "i64": types.int64, "f32": types.float32}
    return types.void(*(names[p.type] for p in kernel.params))


def plans_for(program, config: LaunchConfig = GPU_CONFIG) -> dict[str, Plan]:
    """The three graphs' plans: training reads data rows through the epoch's index,
    evaluation and prediction read them in order."""
    plans = {}
    for name in ("train", "evaluate", "predict"):
        graph = getattr(program, name)
        if graph is not None:
            plans[name] = plan_graph(graph, config, gather=(name == "train"), name=name)
    return plans


# ---------------------------------------------------------------- the simulator

_SIM_READY = False


def prepare_simulator() -> None:
    """Make Numba's CUDA simulator (numba-cuda 0.30) give a GPU's answers, reliably.

    Its `cuda.shared.array` allocates a block's array on first use with an
    unlocked get-then-set keyed by the calling line, so two threads of a block
    can race and get different arrays (a real GPU shares one): a rare, random
    wrong result. The same logic under a lock. Only ever done with the
    simulator switched on, which users do for testing."""
    global _SIM_READY
    if _SIM_READY or not simulator_enabled():
        return
    import threading
    from numba.core import types as nbtypes
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support
    lock = threading.Lock()
    original = kernelapi.FakeCUDAShared.array

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:
            return original(self, shape, dtype, alignment)
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        if isinstance(dtype, nbtypes.Type):
            dtype = numpy_support.as_dtype(dtype)
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                res = np.empty(shape, dtype)
                self._allocations[caller] = res
        return res

    kernelapi.FakeCUDAShared.array = array
    _SIM_READY = True


class _SimulatorPace:
    """While kernels run in the simulator, a short GIL switch interval: its block
    manager busy-polls Python threads, and at the default 5 ms each barrier costs
    a time slice (3-5x slower). Restored afterwards; a no-op on a GPU."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        if self.on:
            self.saved = sys.getswitchinterval()
            sys.setswitchinterval(1e-5)

    def __exit__(self, *exc):
        if self.on:
            sys.setswitchinterval(self.saved)


# ---------------------------------------------------------------- availability

def _unavailable_error(reason: str) -> ModelcError:
    return ModelcError(f"the cuda target needs an NVIDIA GPU with its driver: {reason}",
                       hint="run 'modelc doctor' to see what was found, or use --target cpu")


# ---------------------------------------------------------------- device data

@dataclass
class CudaData:
    """A data set resident on the device: x flattened per sample, y as int64 labels
    or float32 targets."""
    x: object
    y: object
    n: int


class _DeviceGraph:
    """A plan bound to device memory: its kernels compiled, its buffers allocated."""

    def __init__(self, backend: "CudaBackend", plan: Plan):
        from numba import cuda
        self.backend, self.plan, self.cuda = backend, plan, cuda
        module = load_module(plan)
        self.kernels = [cuda.jit(kernel_signature(k), cache=True)(getattr(module, k.name))
                        for k in plan.kernels]
        self.capacity = 0
        self.buffers: dict[int, object] = {}
        self.values = {v.id: v for v in plan.graph.values()}
        self.bound = None
        self.simulated = simulator_enabled()
        self._configs: dict[int, list] = {}

    def ensure(self, batch: int):
        """Buffers for `batch` rows; reallocated only when a larger batch arrives."""
        if batch <= self.capacity:
            return
        cuda = self.cuda
        for vid, buf in self.plan.buffers.items():
            n = buf.per_row * (batch if buf.batched else 1)
            dtype = np.int64 if buf.dtype == I64 else np.float32
            self.buffers[vid] = cuda.device_array(max(1, n), dtype=dtype, stream=self.backend.stream)
        self.capacity = batch
        self.bound = None

    def _bind(self):
        """Resolve every argument that does not change per step, once."""
        b = self.backend
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
                    store = b.d_params if v.role == "param" else b.d_state
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

    def launch(self, data: CudaData, idx, off: int, nb: int, step: int, sums) -> int:
        """Queue one batch's kernels on the backend's stream; returns the launch count."""
        if self.bound is None:
            self._bind()
        scalars = [s.values(step) for s in self.plan.step_scalars]
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
            launchers[n](*args)
        return len(launchers)


class CudaBackend(Backend):
    """The Backend interface on one CUDA device (or Numba's simulator)."""
    name = "cuda"

    def __init__(self, program, config: LaunchConfig | None = None):
        super().__init__(program)
        from modelc.doctor import cuda_available
        ok, reason = cuda_available()
        if not ok:
            raise _unavailable_error(reason)
        from numba import cuda
        self._cuda = cuda
        prepare_simulator()
        self._pace = _SimulatorPace(simulator_enabled())
        self.config = config or (SIM_CONFIG if simulator_enabled() else GPU_CONFIG)
        self.plans = plans_for(program, self.config)       # codegen errors surface here
        self._graphs: dict[str, _DeviceGraph] = {}
        self.stream = cuda.stream()
        self.d_params: dict[str, object] = {}
        self.d_state: dict[str, object] = {}
        self._shapes: dict[str, tuple] = {}
        self._order = None

    def _graph(self, name: str) -> _DeviceGraph:
        if name not in self.plans:
            raise ModelcError(f"this model has no {name} graph (no loss declared?)")
        if name not in self._graphs:
            self._graphs[name] = _DeviceGraph(self, self.plans[name])
        return self._graphs[name]

    # state -------------------------------------------------------------
    def _put(self, store: dict, name: str, array: np.ndarray, shape: tuple):
        host = np.ascontiguousarray(array, dtype=np.float32)
        if tuple(host.shape) != tuple(shape):
            raise ModelcError(f"'{name}' has shape {list(host.shape)}, the model expects {list(shape)}")
        flat = host.reshape(-1)
        self._shapes[name] = tuple(shape)
        if name in store and store[name].size == flat.size:
            store[name].copy_to_device(flat, stream=self.stream)      # keep the allocation
        else:
            store[name] = self._cuda.to_device(flat, stream=self.stream)
            for g in self._graphs.values():
                g.bound = None

    def load_state(self, params, state):
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

    def _results(self, plan: Plan, sums) -> np.ndarray:
        host = sums.copy_to_host(stream=self.stream)
        self.stream.synchronize()
        out = []
        for name in self.program.result_names:
            kind, slot = plan.outputs[name]
            out.append(float(host[slot]))
        return np.array(out, dtype=np.float64)

    # running -----------------------------------------------------------
    def train(self, data, order, batch_size, first_batch, last_batch, step):
        data = self._resident(data)
        graph = self._graph("train")
        graph.ensure(batch_size)
        idx = self._order_on_device(order)
        sums = self._sums(graph.plan)
        with self._pace:
            for b in range(first_batch, last_batch):
                off = b * batch_size
                nb = min(batch_size, len(order) - off)
                if nb <= 0:
                    break
                graph.launch(data, idx, off, nb, step + b - first_batch, sums)
        return self._results(graph.plan, sums)

    def evaluate(self, data, batch_size):
        data = self._resident(data)
        graph = self._graph("evaluate")
        graph.ensure(min(batch_size, max(1, data.n)))
        sums = self._sums(graph.plan)
        with self._pace:
            for start in range(0, data.n, batch_size):
                graph.launch(data, None, start, min(batch_size, data.n - start), 0, sums)
        return self._results(graph.plan, sums)

    def predict(self, data, batch_size):
        data = self._resident(data)
        graph = self._graph("predict")
        graph.ensure(min(batch_size, max(1, data.n)))
        kind, vid = graph.plan.outputs["prediction"]
        out_value = graph.plan.buffers[vid]
        per = out_value.per_row
        result = self._cuda.device_array(max(1, data.n * per), dtype=np.float32, stream=self.stream)
        with self._pace:
            for start in range(0, data.n, batch_size):
                nb = min(batch_size, data.n - start)
                graph.launch(data, None, start, nb, 0, None)
                result[start * per:(start + nb) * per].copy_to_device(graph.buffers[vid][:nb * per],
                                                                      stream=self.stream)
        host = result.copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return host[:data.n * per].reshape((data.n,) + tuple(self.program.output.shape[1:]))

    @property
    def kernel_launches_per_step(self) -> int | None:
        return len(self.plans["train"].kernels) if "train" in self.plans else None


# ---------------------------------------------------------------- one graph, for tests

@dataclass
class _Resident:
    """What a _DeviceGraph needs from its owner: a stream and the resident weights."""
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
    dg = _DeviceGraph(host, plan)
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
    with _SimulatorPace(simulator_enabled()):
        dg.launch(data, idx, 0, nb, step, sums)
    host_sums = sums.copy_to_host()
    outputs = {}
    for key, (kind, ref) in plan.outputs.items():
        if kind == "sum":
            outputs[key] = np.float32(host_sums[ref] / nb)
        else:
            v = plan.buffers[ref]
            n = v.per_row * (nb if v.batched else 1)
            shape = graph.outputs[key].shape
            shape = tuple(nb if d == "B" else d for d in shape)
            outputs[key] = dg.buffers[ref].copy_to_host()[:n].reshape(shape)
    shapes = {v.name: v.shape for v in graph.values()}
    p_out = {k: a.copy_to_host().reshape(shapes.get(k, (-1,))) for k, a in host.d_params.items()}
    s_out = {k: a.copy_to_host().reshape(shapes.get(k, (-1,))) for k, a in host.d_state.items()}
    return outputs, p_out, s_out


# ---------------------------------------------------------------- PTX and cubins

def _cc(arch: str) -> tuple[int, int]:
    m = re.fullmatch(r"(?:sm_|compute_)?(\d)(\d+)", arch.strip())
    if not m:
        raise ModelcError(f"unknown GPU architecture '{arch}'", hint="use sm_80 (A100), sm_90 (H100), sm_89 ...")
    return int(m.group(1)), int(m.group(2))


def _compiler_error(err: Exception) -> ModelcError:
    return ModelcError(f"cannot compile CUDA kernels: {err}",
                       hint="install the CUDA compiler libraries with pip install 'modelc[cuda]' "
                            "(numba-cuda[cu12]) and run 'modelc doctor'")


def plan_ptx(plan: Plan, arch: str = "sm_90", _memo: dict | None = None) -> dict[str, str]:
    """PTX of every kernel of one plan, by kernel name. Needs the CUDA compiler
    libraries (NVVM, libdevice), not a GPU; not available under the simulator."""
    if simulator_enabled():
        raise ModelcError("PTX cannot be emitted under the CUDA simulator",
                          hint="unset NUMBA_ENABLE_CUDASIM")
    from numba import cuda
    cc = _cc(arch)
    memo = {} if _memo is None else _memo
    module = load_module(plan)
    out = {}
    for k in plan.kernels:
        key = (k.source, k.signature_text(), cc)      # evaluate and predict share kernels
        if key not in memo:
            try:
                memo[key], _ = cuda.compile_ptx(getattr(module, k.name), kernel_signature(k), cc=cc)
            except ModelcError:
                raise
            except Exception as err:
                # NVVM or libdevice missing is the user's to fix; NVVM rejecting a
                # kernel (NvvmError) or a typing error is a compiler bug and propagates.
                if type(err).__name__ in ("NvvmSupportError", "CudaSupportError"):
                    raise _compiler_error(err) from None
                raise
        out[k.name] = memo[key]
    return out


def emit_ptx(program, out_dir, arch: str = "sm_90", config: LaunchConfig = GPU_CONFIG) -> list[Path]:
    """Compile every generated kernel of every graph to PTX for `arch` and write one
    `<graph>.<kernel>.ptx` per kernel (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    memo: dict = {}
    paths: list[Path] = []
    for gname, plan in plans_for(program, config).items():
        for name, ptx in plan_ptx(plan, arch, memo).items():
            path = out / f"{gname}.{name}.ptx"
            _atomic_write(path, ptx.encode())
            paths.append(path)
    return paths


@dataclass
class KernelResources:
    """What ptxas assigned one kernel. `shared_bytes` is nvJitLink's figure: static
    shared memory, plus on sm_90 the 1 KB per block the system reserves."""
    kernel: str
    arch: str
    registers: int
    shared_bytes: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    cubin_bytes: int

    def __str__(self) -> str:
        return (f"{self.kernel:<44} {self.arch}  {self.registers:>3} regs  {self.shared_bytes:>5} B smem  "
                f"spills {self.spill_stores}/{self.spill_loads} B  stack {self.stack_bytes} B")


def _nvjitlink_link(ptx: bytes, arch: str, name: str) -> tuple[bytes, str]:
    from cuda.bindings import nvjitlink
    handle = nvjitlink.create(2, [f"-arch={arch}", "-verbose"])
    try:
        try:
            nvjitlink.add_data(handle, nvjitlink.InputType.PTX, ptx, len(ptx), name)
            nvjitlink.complete(handle)
        except Exception as err:
            size = nvjitlink.get_error_log_size(handle)
            log = bytearray(size)
            nvjitlink.get_error_log(handle, log)
            raise ModelcError(f"nvJitLink rejected {name}: {log.decode(errors='replace').strip() or err}")
        cubin = bytearray(nvjitlink.get_linked_cubin_size(handle))
        nvjitlink.get_linked_cubin(handle, cubin)
        log = bytearray(nvjitlink.get_info_log_size(handle))
        nvjitlink.get_info_log(handle, log)
        return bytes(cubin), log.decode(errors="replace").rstrip("\x00")
    finally:
        nvjitlink.destroy(handle)


def _first(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else 0


def link_report(ptx_files, arch: str = "sm_90", cubin_dir=None) -> list[KernelResources]:
    """Link each PTX file to a cubin with nvJitLink (no GPU needed) and report the
    registers, shared memory, spills and stack ptxas assigned to its kernel."""
    try:
        from cuda.bindings import nvjitlink  # noqa: F401
    except ImportError as err:
        raise ModelcError(f"nvJitLink is not available: {err}",
                          hint="pip install cuda-bindings nvidia-nvjitlink-cu12 (part of 'modelc[cuda]')")
    major, minor = _cc(arch)
    sm = f"sm_{major}{minor}"
    rows = []
    for path in map(Path, ptx_files):
        cubin, log = _nvjitlink_link(path.read_bytes(), sm, path.name)
        if cubin_dir is not None:
            _atomic_write(Path(cubin_dir) / (path.stem + f".{sm}.cubin"), cubin)
        rows.append(KernelResources(
            kernel=path.stem, arch=sm, registers=_first(r"used (\d+) registers", log),
            shared_bytes=_first(r"(\d+) bytes smem", log),
            spill_stores=_first(r"(\d+) bytes spill stores", log),
            spill_loads=_first(r"(\d+) bytes spill loads", log),
            stack_bytes=_first(r"(\d+) bytes stack frame", log), cubin_bytes=len(cubin)))
    return rows


def main(argv=None) -> int:
    """python -m modelc.compiler.codegen.cuda SPEC [--arch sm_90] [--out DIR]: the
    kernels of each graph, launches per training step, and per-kernel registers,
    shared memory and spills from nvJitLink (no GPU needed)."""
    import argparse
    from modelc.compiler.build import build_program
    from modelc.grammar.parser import parse_file
    parser = argparse.ArgumentParser(prog="python -m modelc.compiler.codegen.cuda", description=main.__doc__)
    parser.add_argument("spec")
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--out", help="keep the .ptx and .cubin files here")
    args = parser.parse_args(argv)
    try:
        program = build_program(parse_file(args.spec))
        for name, plan in plans_for(program).items():
            print(f"{name}: {len(plan.kernels)} kernels" + (" (launches per step)" if name == "train" else ""))
            for k in plan.kernels:
                print("  " + k.describe().split(": ", 1)[0])
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="modelc-ptx-"))
        paths = emit_ptx(program, out, args.arch)
        print(f"\nnvJitLink, {args.arch}:")
        for row in link_report(paths, args.arch, cubin_dir=out if args.out else None):
            print("  " + str(row))
    except ModelcError as err:
        print(err, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
