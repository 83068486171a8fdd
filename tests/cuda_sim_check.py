"""The cuda target under Numba's CUDA simulator, against the numpy target.

Run as its own process with NUMBA_ENABLE_CUDASIM=1 in the environment (the
simulator is chosen when numba is first imported, so it must never be switched
on inside the main pytest process): tests/test_cuda_sim.py does that.

Two kinds of check, each printed as `ok NAME` or `FAIL NAME: why`:
  * every case of tests/cuda_cases.py (one small graph per primitive, per
    activation, per loss variant, per optimizer), run once by
    `cuda_harness.run_graph` and by `numpy_target.run_graph` on the same inputs, with
    every output, parameter and state array compared;
  * whole specs through the Backend interface: same weights, same batches, a
    few training steps, then evaluate and predict, against the numpy backend.
Shapes are tiny (batch 8, a few units): the simulator runs each GPU thread as a
Python thread. The exit status is the number of failed checks (0 = all passed).

    NUMBA_ENABLE_CUDASIM=1 python tests/cuda_sim_check.py [NAME-SUBSTRING ...]
    python tests/cuda_sim_check.py --device [--json] [NAME-SUBSTRING ...]

`--device` runs the same checks on a real GPU with the GPU's launch configuration
(tests/test_cuda_device.py, bench/gpu_check.sh); `--json` prints one JSON line per
check instead of the text lines.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import traceback
from pathlib import Path

DEVICE = "--device" in sys.argv[1:]
if DEVICE and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    sys.exit("--device runs on a real GPU: unset NUMBA_ENABLE_CUDASIM")
if not DEVICE and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    sys.exit("run with NUMBA_ENABLE_CUDASIM=1 (the simulator must be chosen before numba is imported), "
             "or with --device on a machine with a GPU")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
from numba.core import config as _numba_config  # noqa: E402

from tests import cuda_cases  # noqa: E402
from modelc.compiler.codegen import get_backend  # noqa: E402
from modelc.compiler.codegen.cuda import CudaBackend  # noqa: E402
from modelc.compiler.codegen.cuda_env import prepare_simulator  # noqa: E402
from modelc.compiler.codegen.cuda_epoch import schedule  # noqa: E402
from modelc.compiler.codegen.cuda_harness import run_graph as cuda_run  # noqa: E402
from modelc.compiler.codegen.cuda_plan import GPU_CONFIG, SIM_CONFIG  # noqa: E402
from modelc.compiler.codegen.cuda_planner import plan_graph  # noqa: E402
from modelc.compiler.codegen.numpy_target import run_graph as numpy_run  # noqa: E402
from modelc.errors import ModelcError  # noqa: E402
from modelc.runtime.seeding import initial_weights  # noqa: E402

assert _numba_config.ENABLE_CUDASIM or DEVICE, "numba did not pick up NUMBA_ENABLE_CUDASIM"
if DEVICE:
    from modelc.compiler.codegen.cuda_env import cuda_available  # noqa: E402
    _ok, _reason = cuda_available()
    if not _ok:
        sys.exit(f"--device needs an NVIDIA GPU with its driver: {_reason}")
# The backend locks the simulator's shared-array allocation (a race in numba-cuda
# 0.30's simulator) and paces its threads; cuda_harness.run_graph does the same.
prepare_simulator()

# One kernel against the reference differs only by summation order and float32
# rounding (the simulator evaluates math.* in float64); a few training steps
# compound that a little.
PRIM_RTOL, PRIM_ATOL = 2e-5, 2e-6
TRAIN_RTOL, TRAIN_ATOL = 1e-4, 1e-5


class Mismatch(AssertionError):
    pass


def compare(what: str, got, want, rtol, atol) -> float:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise Mismatch(f"{what}: shape {got.shape}, expected {want.shape}")
    err = np.abs(got - want)
    bad = err > atol + rtol * np.abs(want)
    if bad.any() or not np.array_equal(np.isnan(got), np.isnan(want)):
        i = np.unravel_index(np.argmax(np.where(bad, err, 0)), err.shape) if bad.any() else ()
        raise Mismatch(f"{what}: max abs error {np.nanmax(err):.3g} (at {tuple(int(j) for j in i)}: "
                       f"got {got[i] if i else got}, expected {want[i] if i else want})")
    return float(err.max()) if err.size else 0.0


# ---------------------------------------------------------------- one graph

def check_case(c: cuda_cases.Case) -> float:
    g = c.g
    if c.expect is not None:
        complaint = c.expect(plan_graph(g.graph, SIM_CONFIG))
        if complaint:
            raise Mismatch(complaint)
    env = {g.x.id: c.x, g.step.id: np.int64(c.step)}
    feeds = {"x": c.x}
    if g.t is not None:
        env[g.t.id], feeds["t"] = c.t, c.t
    params = {k: v.copy() for k, v in g.init.items()}
    state = {k: v.copy() for k, v in g.init_state.items()}
    env.update({p.id: params[p.name] for p in g.graph.params})
    env.update({s.id: state[s.name] for s in g.graph.state})
    want = numpy_run(g.graph, env)       # updates params and state in place
    outs, got_params, got_state = cuda_run(g.graph, feeds, g.init, g.init_state, step=c.step)
    worst = 0.0
    for key, value in want.items():
        worst = max(worst, compare(f"output {key}", outs[key], value, PRIM_RTOL, PRIM_ATOL))
    for key, value in params.items():
        worst = max(worst, compare(f"param {key}", got_params[key], value, PRIM_RTOL, PRIM_ATOL))
    for key, value in state.items():
        worst = max(worst, compare(f"state {key}", got_state[key], value, PRIM_RTOL, PRIM_ATOL))
    return worst


# ---------------------------------------------------------------- whole specs

def fresh(prog, rng) -> tuple[dict, dict]:
    """A program's parameters drawn by their initializers from `rng`, and zeroed state."""
    return initial_weights(prog, rng), {v.name: np.zeros(v.shape, np.float32) for v in prog.state}


def compare_training(prog, n, steps, batch=cuda_cases.BATCH_SIZE, config=None, lr_scale=1.0, epoch=True,
                     plans=None):
    """Same weights, same batches on numpy and cuda: the result sums, every parameter
    and state array after `steps` updates (at the learning-rate factor `lr_scale`), then
    evaluate and predict. `config`: the cuda launch configuration (default: the
    simulator's small blocks); `epoch`: in the epoch kernel (which every case must get) or
    kernel by kernel; `plans(backend.plans)`: changes the plans before they run."""
    rng = np.random.default_rng(7)
    params, state = fresh(prog, rng)
    for info in prog.params:   # non-zero biases, so bias paths matter from the first step
        if info.init == "zeros":
            params[info.value.name] = cuda_cases.randn(rng, *info.value.shape, scale=0.1)
    x, y = cuda_cases.spec_data(prog, n, rng)
    order = rng.permutation(n)
    results = {}
    for target in ("numpy", "cuda"):
        backend = CudaBackend(prog, config, epoch) if target == "cuda" else get_backend(target, prog)
        if target == "cuda" and plans is not None:
            plans(backend.plans)
        backend.load_state(params, state)
        data = backend.upload(x, y)
        sums = backend.train(data, order, batch, 0, steps, 0, lr_scale)
        weights, opt = backend.read_state()
        results[target] = (sums, weights, opt, backend.evaluate(data, batch), backend.predict(data, batch),
                           backend.kernels_per_step)
        if target == "cuda":
            modes = {name: graph.epoch for name, graph in backend._graphs.items()}
    if any(isinstance(m, str) for m in modes.values()) == epoch:
        said = {name: m if isinstance(m, str) else "epoch kernel" for name, m in modes.items()}
        raise Mismatch(f"the graphs ran {'kernel by kernel' if epoch else 'in the epoch kernel'}: {said}")
    (s0, w0, o0, e0, p0, _), (s1, w1, o1, e1, p1, launches) = results["numpy"], results["cuda"]
    worst = compare("train sums", s1, s0, TRAIN_RTOL, TRAIN_ATOL)
    for k in w0:
        worst = max(worst, compare(f"param {k}", w1[k], w0[k], TRAIN_RTOL, TRAIN_ATOL))
    for k in o0:
        worst = max(worst, compare(f"state {k}", o1[k], o0[k], TRAIN_RTOL, TRAIN_ATOL))
    worst = max(worst, compare("evaluate sums", e1, e0, TRAIN_RTOL, TRAIN_ATOL))
    worst = max(worst, compare("predict", p1, p0, TRAIN_RTOL, TRAIN_ATOL))
    return worst, launches


SPEC_CHECKS = []


def spec_check(name):
    def register(fn):
        SPEC_CHECKS.append((name, fn))
        return fn
    return register


@spec_check("blobs spec: 3 steps of adam at batch 8, then evaluate and predict; 7 kernels per step")
def _():
    worst, launches = compare_training(cuda_cases.program("blobs"), 30, 3)
    if launches != 7:
        raise Mismatch(f"blobs should run 7 kernels per step, runs {launches}")
    return worst


@spec_check("blobs spec with the GPU's launch configuration (16x16 tiles, 256-thread blocks), batch 20")
def _():
    return compare_training(cuda_cases.program("blobs"), 40, 2, batch=20, config=GPU_CONFIG)[0]


@spec_check("dropout, add, concat, huber, mae/mse, nesterov sgd with a schedule; a partial batch")
def _():
    return compare_training(cuda_cases.program("features"), 12, 2)[0]


@spec_check("gelu/softplus/silu, sigmoid + binary cross-entropy on logits, rmsprop with momentum")
def _():
    return compare_training(cuda_cases.program("binary"), 16, 2)[0]


@spec_check("softmax(temperature) + sparse cross-entropy on logits, adamw with cosine decay")
def _():
    return compare_training(cuda_cases.program("sparse"), 24, 3)[0]


@spec_check("cnn: conv2d (bias + relu fused), batch norm (moving statistics), max/avg/global pooling, "
            "layer norm, 2 steps of adam at batch 4 with a partial batch, then evaluate and predict")
def _():
    return compare_training(cuda_cases.program("cnn"), 7, 2, batch=4)[0]


@spec_check("train in chunks with one order (as under a progress bar), then a new order")
def _():
    prog = cuda_cases.program("blobs")
    rng = np.random.default_rng(3)
    params, state = fresh(prog, rng)
    x, y = cuda_cases.spec_data(prog, 28, rng)
    first, second = rng.permutation(28), rng.permutation(28)
    got = {}
    for target in ("numpy", "cuda"):
        backend = get_backend(target, prog)
        backend.load_state(params, state)
        data = backend.upload(x, y)
        sums = [backend.train(data, first, 8, 0, 2, 0), backend.train(data, first, 8, 2, 4, 2),
                backend.train(data, second, 8, 0, 2, 4)]
        got[target] = (sums, backend.read_state()[0])
    worst = 0.0
    for i, (a, b) in enumerate(zip(got["cuda"][0], got["numpy"][0])):
        worst = max(worst, compare(f"sums of call {i}", a, b, TRAIN_RTOL, TRAIN_ATOL))
    for k, v in got["numpy"][1].items():
        worst = max(worst, compare(f"param {k}", got["cuda"][1][k], v, TRAIN_RTOL, TRAIN_ATOL))
    return worst


@spec_check("spec names equal to the compiler's own: input step, target lr, layers order, batch, sums, A, L, "
            "idx, off, nb, u_w, d, kernel, alpha (dropout reads the update counter)")
def _():
    return compare_training(cuda_cases.program("clash"), 20, 3)[0]


@spec_check("a learning-rate factor of 0.5 (adam, a schedule-free rate), 3 steps")
def _():
    return compare_training(cuda_cases.program("blobs"), 24, 3, lr_scale=0.5)[0]


@spec_check("a batch of 10**8 on 12 samples: one batch of the data, buffers for 12 rows")
def _():
    return compare_training(cuda_cases.program("features"), 12, 1, batch=10 ** 8)[0]


@spec_check("specs/blobs.model: 3 steps at batch 8")
def _():
    from modelc.compiler.build import build_program
    from modelc.grammar.parser import parse_file
    path = HERE.parent / "specs" / "blobs.model"
    return compare_training(build_program(parse_file(path)), 24, 3)[0]


@spec_check("the optimizer split in two kernels before its arguments pass 4 KB: 18 parameters, adam, "
            "global clipnorm")
def _():
    prog = cuda_cases.deep(8)
    updates = [k for k in plan_graph(prog.train, SIM_CONFIG).kernels if "_update_" in k.name]
    if len(updates) < 2 or max(k.param_bytes() for k in updates) > 4096:
        raise Mismatch(f"update kernels take {[k.param_bytes() for k in updates]} bytes of arguments")
    return compare_training(prog, 12, 2, batch=6)[0]


@spec_check("a 40-layer net with a global clipnorm, whose sum-of-squares kernel is too large to launch alone: "
            "it trains in the epoch kernel, and kernel by kernel it is refused with the reason")
def _():
    prog = cuda_cases.deep(40)
    worst = compare_training(prog, 6, 1, batch=6)[0]
    try:
        compare_training(prog, 6, 1, batch=6, epoch=False)
    except ModelcError as err:
        if "runs on the GPU only in the epoch kernel" not in str(err):
            raise Mismatch(f"the refusal does not say why: {err}") from None
        return worst
    raise Mismatch("kernel by kernel, the 40-layer net was not refused")


@spec_check("evaluate and predict past the grid's rows (y limited to 2 blocks here): launches that fit")
def _():
    from modelc.compiler.codegen import cuda_plan
    limit, cuda_plan.GRID_YZ = cuda_plan.GRID_YZ, 2
    try:
        return compare_training(cuda_cases.program("blobs"), 40, 1, batch=40)[0]
    except ModelcError as err:       # training at 40 rows is refused: one step's batch cannot be split
        if "more than one launch of this model's kernels can take" not in str(err):
            raise
        prog = cuda_cases.program("blobs")
        backend = CudaBackend(prog)
        reference = get_backend("numpy", prog)
        rng = np.random.default_rng(2)
        params, state = fresh(prog, rng)
        x, y = cuda_cases.spec_data(prog, 40, rng)
        worst = 0.0
        for b in (backend, reference):
            b.load_state(params, state)
        for what in ("evaluate", "predict"):
            got = getattr(backend, what)(backend.upload(x, y), 40)
            want = getattr(reference, what)(reference.upload(x, y), 40)
            worst = max(worst, compare(what, got, want, TRAIN_RTOL, TRAIN_ATOL))
        return worst
    finally:
        cuda_plan.GRID_YZ = limit


@spec_check("kernel by kernel (MODELC_CUDA_EPOCH=0): blobs and the cnn")
def _():
    return max(compare_training(cuda_cases.program("blobs"), 30, 3, epoch=False)[0],
               compare_training(cuda_cases.program("cnn"), 7, 2, batch=4, epoch=False)[0])


def _reversed_segments(plans):
    """Each run of kernels the epoch kernel places between two grid barriers, its units in the
    reverse order (a joined pair stays in order): the units of a run may run in any order on a
    GPU, so the results must not change."""
    for name, plan in plans.items():
        kernels = [k for run in schedule(plan.kernels) for unit in run[::-1] for k in unit]
        plans[name] = dataclasses.replace(plan, kernels=kernels)


@spec_check("kernels with no barrier between them in the epoch kernel, run in the reverse order: "
            "the blobs mlp and the cnn")
def _():
    return max(compare_training(cuda_cases.program("blobs"), 30, 3, epoch=False, plans=_reversed_segments)[0],
               compare_training(cuda_cases.program("cnn"), 7, 2, batch=4, epoch=False,
                                plans=_reversed_segments)[0])


@spec_check("a device that refuses the epoch kernel's launch: a warning, and the call runs kernel by kernel; "
            "a fault found when the call's results come back: a message with what to do")
def _():
    import warnings
    prog = cuda_cases.program("blobs")
    rng = np.random.default_rng(5)
    params, state = fresh(prog, rng)
    x, y = cuda_cases.spec_data(prog, 16, rng)
    want = get_backend("numpy", prog)
    want.load_state(params, state)
    want_sums = want.train(want.upload(x, y), np.arange(16), 8, 0, 2, 0)
    backend = CudaBackend(prog)
    backend.load_state(params, state)
    data = backend.upload(x, y)
    graph = backend._graph("train")
    assert graph._epoch_ready()

    class Refused:
        def __getitem__(self, config):
            def launch(*args):
                raise RuntimeError("CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE")
            return launch
    graph._epoch_kernel = Refused()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        sums = backend.train(data, np.arange(16), 8, 0, 2, 0)
    if not any("epoch kernel of 'train' is not used" in str(w.message) for w in said):
        raise Mismatch(f"no warning: {[str(w.message) for w in said]}")
    if not isinstance(graph.epoch, str) or backend.launch_mode == "epoch kernel":
        raise Mismatch(f"still in the epoch kernel: {backend.launch_mode}")
    worst = compare("sums kernel by kernel", sums, want_sums, TRAIN_RTOL, TRAIN_ATOL)

    class Faulted:
        def copy_to_host(self, stream=0):
            raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")
    try:
        backend._results(graph.plan, Faulted())
    except ModelcError as err:
        if "MODELC_CUDA_SYNC=1" not in str(err.hint) or "ILLEGAL_ADDRESS" not in str(err):
            raise Mismatch(f"the message does not say what to do: {err} / {err.hint}") from None
        return worst
    raise Mismatch("a fault at the results was not reported")


@spec_check("MODELC_CUDA_SYNC=1: a kernel that fails is named, with its grid, block and batch")
def _():
    prog = cuda_cases.program("blobs")
    backend = CudaBackend(prog)
    rng = np.random.default_rng(4)
    backend.load_state(*fresh(prog, rng))
    x, y = cuda_cases.spec_data(prog, 8, rng)
    data = backend.upload(x, y)
    graph = backend._graph("train")
    graph.sync = True
    backend.train(data, np.arange(8), 8, 0, 1, 0)       # synchronised, it trains as before
    launchers = graph._launchers(8)

    def fault(*_args):
        raise RuntimeError("an illegal memory access was encountered")
    graph._launchers = lambda nb: launchers[:2] + [fault] + launchers[3:]
    try:
        backend.train(data, np.arange(8), 8, 0, 1, 1)
    except ModelcError as err:
        name = graph.plan.kernels[2].name
        if name not in str(err) or "block" not in str(err) or "8 rows from row 0, update 1" not in str(err):
            raise Mismatch(f"the message does not say where: {err}")
        return 0.0
    raise Mismatch("the fault was not reported")


def _report(as_json: bool, name: str, worst: float | None, seconds: float, error: str | None) -> None:
    if as_json:
        print(json.dumps({"check": name, "ok": error is None, "max_abs_error": worst, "seconds": round(seconds, 3),
                          "error": error}), flush=True)
    elif error is None:
        print(f"ok   {name}  (max abs error {worst:.2g}, {seconds:.1f} s)", flush=True)
    else:
        print(f"FAIL {name}: {error}", flush=True)


def main(argv) -> int:
    as_json = "--json" in argv
    wanted = [a.lower() for a in argv if a not in ("--json", "--device")]
    checks = [(name, (lambda build=build: check_case(build()))) for name, build in cuda_cases.CASES]
    checks += SPEC_CHECKS
    failures = ran = 0
    start = time.perf_counter()
    for name, fn in checks:
        if wanted and not any(w in name.lower() for w in wanted):
            continue
        ran += 1
        t0 = time.perf_counter()
        try:
            worst, error = fn(), None
        except Mismatch as err:
            worst, error = None, str(err)
        except Exception:
            worst, error = None, f"crashed\n{traceback.format_exc()}"
        failures += error is not None
        _report(as_json, name, worst, time.perf_counter() - t0, error)
    summary = {"checks": ran, "failed": failures, "seconds": round(time.perf_counter() - start, 1),
               "where": "device" if DEVICE else "simulator"}
    print(json.dumps({"check": "summary", "ok": failures == 0, **summary}) if as_json else
          f"{ran} checks, {failures} failed, {summary['seconds']} s", flush=True)
    return failures


if __name__ == "__main__":
    sys.exit(min(main(sys.argv[1:]), 100))
