"""The GPU check (issue 12): what a person with an NVIDIA GPU runs once, in under 6
minutes, so that what the cuda target claims about real hardware is checked in one go:
the device, `modelc doctor`, every kernel case on it (tests/cuda_sim_check.py --device
--json), MNIST on cuda against cpu (speed, accuracy, determinism), the epoch kernel
against kernel-by-kernel launches (seconds per epoch, the same weights), host enqueue
time against GPU time, per-kernel CUDA-event times, larger batches, the MNIST convnet,
PyTorch (eager, CUDA graph) as peers, compute-sanitizer's memcheck. One JSON line per
result (stdout and --out FILE); a failing check is reported and the next runs; exit 1
when any failed. --smoke runs the in-process checks' code under Numba's CUDA simulator
on tiny specs (it runs each GPU thread as a Python thread: one MNIST step takes
minutes there), so tests/test_gpu_check.py finds a mistake here before a GPU run does.

    bench/gpu_check.sh [--out FILE] [--data DIR] [--smoke]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUDGET_S = 330          # every subprocess's timeout is cut to what is left of this
DETERMINISM_TOLERANCE = 1e-6
ACCURACY_TOLERANCE = 0.01

# The smoke run's convnet: the shape of specs/mnist_cnn.model's layers, small enough
# for the simulator (specs/images_cnn.model takes ~100 s for three steps there).
SMOKE_CNN = """model smoke_cnn
input  image: f32[6, 6, 1]
target label: f32[3] onehot
network { image -> conv2d(2, [3, 3], relu) -> max_pooling2d([2, 2]) -> flatten -> dropout(0.5) -> dense(3, softmax) => probs }
loss      categorical_crossentropy(label, probs)
optimizer adam(lr=0.001)
metrics   accuracy
train { data blobs(samples=100, centers=3, features=[6, 6, 1], std=2.0, seed=2, onehot=true) }
"""

MEMCHECK_SNIPPET = """
import numpy as np, modelc
rng = np.random.default_rng(0)
model = modelc.compile("specs/mnist.model", target="cuda", seed=0)
model.fit(rng.random((96, 28, 28), dtype=np.float32), rng.integers(0, 10, 96), epochs=1, batch_size=32, verbose=0)
"""


@dataclass(frozen=True)
class Sizes:
    """How much each check runs: the real run's, or the smoke run's tiny ones."""
    mlp: str                    # spec path or text: the MLP trained on cuda and cpu
    cnn: str                    # the convnet
    cnn_batch: int | None       # None: the spec's own batch
    train_rows: int | None      # None: all of the training split
    test_rows: int | None
    batch: int
    eval_batch: int
    epochs: int
    enqueue_steps: int
    event_steps: int
    big_batches: tuple[int, ...]


FULL = Sizes("specs/mnist.model", "specs/mnist_cnn.model", None, None, None, 32, 256, 3, 200, 20, (128, 512))
SMOKE = Sizes("specs/blobs.model", SMOKE_CNN, 8, 16, 64, 8, 64, 3, 2, 2, (8, 16))


class Report:
    """One JSON line per result, to stdout and to the --out file; counts the failures."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("w")
        self.failed = 0

    def emit(self, check: str, ok: bool, **fields) -> None:
        line = json.dumps({"check": check, "ok": bool(ok), **fields}, default=str)
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()
        self.failed += not ok

    def skip(self, check: str, reason: str) -> None:
        self.emit(check, True, skipped=True, reason=reason)

    def run(self, check: str, fn, *args) -> object:
        """Run one check; `fn` returns (fields, value). A crash is this check's failure only."""
        t0 = time.perf_counter()
        try:
            fields, value = fn(*args)
        except Exception as exc:     # noqa: BLE001 - reported, and the next check runs
            tail = traceback.format_exc().strip().splitlines()[-3:]
            self.emit(check, False, error=f"{type(exc).__name__}: {exc}", traceback=tail,
                      seconds=round(time.perf_counter() - t0, 3))
            return None
        ok = fields.pop("ok", True)
        self.emit(check, ok, **fields, seconds=round(time.perf_counter() - t0, 3))
        return value


def _left(start: float, cap: float) -> float:
    """A subprocess's timeout: its cap, cut to what remains of the whole run's budget."""
    return max(15.0, min(cap, BUDGET_S - (time.perf_counter() - start)))


def _bounded(cmd: list[str], timeout: float) -> tuple[str, str, int | None]:
    """A subprocess's stdout, stderr and exit status (None: it timed out), outside the simulator."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        return proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out, err = (s.decode(errors="replace") if isinstance(s, bytes) else s or "" for s in (exc.stdout, exc.stderr))
        return out, err, None


def device_fields(smoke: bool):
    from numba import cuda
    dev = cuda.get_current_device()
    name = getattr(dev, "name", "the CUDA simulator")
    from numba.cuda.cudadrv.driver import driver as drv     # the simulator's FakeDriver has no version
    driver = "simulator" if smoke else ".".join(str(v) for v in drv.get_version())
    return {"name": name.decode() if isinstance(name, bytes) else str(name),
            "compute_capability": ".".join(str(v) for v in dev.compute_capability), "driver_version": driver,
            **{dist: metadata.version(dist) for dist in ("numba-cuda", "numba", "modelc")}}, None


def doctor_fields():
    from modelc.doctor import report
    text = report()
    return {"ok": re.search(r"cuda target\s+ready", text) is not None, "text": text}, None


def kernel_checks(report: Report, start: float) -> None:
    """tests/cuda_sim_check.py --device --json on the GPU; each of its lines forwarded."""
    timeout = _left(start, 150)
    out, err, rc = _bounded([sys.executable, "tests/cuda_sim_check.py", "--device", "--json"], timeout)
    forwarded = failed = 0
    for line in out.splitlines():
        try:
            record = json.loads(line)
            assert isinstance(record, dict)
        except (ValueError, AssertionError):
            continue        # its other output: tracebacks, warnings
        ok = bool(record.pop("ok", rc == 0))
        name = record.pop("check", "summary")
        report.emit(f"kernels: {name}", ok, **record)
        forwarded += 1
        failed += not ok
    if rc is None:
        report.emit("kernels", False, error=f"timed out after {timeout:.0f} s", stderr_tail=err[-2000:])
    elif forwarded == 0:
        report.emit("kernels", False, error=f"tests/cuda_sim_check.py printed no JSON lines (exit {rc}): "
                    "does it take --device --json in this checkout?", output_tail=(out + err)[-2000:])
    elif rc != 0 and failed == 0:
        report.emit("kernels", False, error=f"tests/cuda_sim_check.py exited {rc}", stderr_tail=err[-2000:])


def _data(spec: str, data_dir, sizes: Sizes):
    """The spec's train and test splits, cut to the sizes' rows."""
    import modelc
    (x, y), (xt, yt) = modelc.compile(spec, target="numpy", seed=0).load_data(data_dir, quiet=True)
    return (x[:sizes.train_rows], y[:sizes.train_rows]), (xt[:sizes.test_rows], yt[:sizes.test_rows])


def _trained(spec: str, target: str, data, epochs: int, batch: int | None):
    """A fresh model from seed 0, compiled (not timed in its epochs) and trained."""
    import modelc
    model = modelc.compile(spec, target=target, seed=0)
    warm = model.warm_up()
    history = model.fit(*data, epochs=epochs, batch_size=batch, verbose=0)
    return model, warm, [round(e["seconds"], 4) for e in history.epochs]


def train_fields(spec, target, train, test, epochs: int, batch: int | None, eval_batch: int):
    """Seconds per epoch and test accuracy of a fresh model (batch None: the spec's own)."""
    model, warm, seconds = _trained(spec, target, train, epochs, batch)
    accuracy = model.evaluate(*test, batch_size=eval_batch, return_dict=True)["accuracy"]
    return {"target": target, "spec": spec if spec.endswith(".model") else "smoke convnet",
            **({"launch_mode": model.backend.launch_mode} if target == "cuda" else {}),
            "batch": batch or model.settings.batch, "epochs": epochs, "warm_up_seconds": round(warm, 3),
            "seconds_per_epoch": seconds, "test_accuracy": round(float(accuracy), 5)}, (model, float(accuracy))


def determinism_fields(spec, train, sizes: Sizes):
    """Two fresh cuda models, one epoch each from seed 0: the same weights, or how far apart."""
    first, _, _ = _trained(spec, "cuda", train, 1, sizes.batch)
    second, _, _ = _trained(spec, "cuda", train, 1, sizes.batch)
    worst = max(float(np.max(np.abs(a - b))) if a.size else 0.0
                for a, b in zip(first.get_weights(), second.get_weights()))
    verdict = "bit-identical" if worst == 0 else "tiny" if worst <= DETERMINISM_TOLERANCE else "different"
    return {"ok": worst <= DETERMINISM_TOLERANCE, "max_abs_difference": worst, "verdict": verdict,
            "tolerance": DETERMINISM_TOLERANCE}, second


def modes_fields(spec, train, sizes: Sizes):
    """One epoch in the epoch kernel (the default) against one kernel by kernel
    (MODELC_CUDA_EPOCH=0), from the same seed: seconds and how far apart the weights end."""
    runs = {}
    for mode, flag in (("epoch_kernel", "1"), ("kernel_by_kernel", "0")):
        with mock.patch.dict(os.environ, MODELC_CUDA_EPOCH=flag):
            model, _, seconds = _trained(spec, "cuda", train, 1, sizes.batch)
        runs[mode] = (model, seconds[0], model.backend.launch_mode)
    worst = max(float(np.max(np.abs(a - b))) if a.size else 0.0
                for a, b in zip(runs["epoch_kernel"][0].get_weights(), runs["kernel_by_kernel"][0].get_weights()))
    (_, fast, mode_a), (_, slow, mode_b) = runs["epoch_kernel"], runs["kernel_by_kernel"]
    return {"ok": worst <= DETERMINISM_TOLERANCE and mode_a == "epoch kernel", "batch": sizes.batch,
            "seconds_epoch_kernel": fast, "seconds_kernel_by_kernel": slow,
            "speedup": round(slow / fast, 3) if fast else None, "modes": [mode_a, mode_b],
            "max_abs_weight_difference": worst}, None


def enqueue_fields(model, train, sizes: Sizes):
    """Host time to queue a step's kernels against the time until the GPU has run them.

    `CudaBackend.train` reads the loss sums back at its end, so its wall time already
    includes the GPU's; the enqueue time comes from the same launches queued by
    `DeviceGraph.launch` directly, timed before and after `stream.synchronize()`."""
    from numba import cuda
    backend, n, batch = model.backend, sizes.enqueue_steps, sizes.batch
    data = backend.upload(*train)
    order = np.arange(len(train[0]), dtype=np.int64)
    backend.train(data, order, batch, 0, n, 0)     # buffers and launch configurations made
    t0 = time.perf_counter()
    backend.train(data, order, batch, 0, n, n)
    train_call = time.perf_counter() - t0
    graph = backend._graph("train")
    idx = cuda.to_device(order, stream=backend.stream)
    sums = backend._sums(graph.plan)
    backend.stream.synchronize()
    with backend._pace:
        t0 = time.perf_counter()
        for s in range(n):
            graph.launch(data, idx, s * batch, batch, 2 * n + s, sums)
        queued = time.perf_counter() - t0
        backend.stream.synchronize()
        done = time.perf_counter() - t0
    ms = {f"{what}_ms_per_step": round(seconds * 1000.0 / n, 4)
          for what, seconds in (("train_call", train_call), ("enqueue", queued), ("synchronized", done))}
    return {"steps": n, "batch": batch, "kernels_per_step": len(graph.plan.kernels), **ms,
            "train_call_mode": backend.launch_mode,
            "host_bound": queued >= 0.9 * done}, (backend, graph, data, idx, sums)


def kernel_time_fields(bound, sizes: Sizes):
    """Each kernel's mean device time in µs, from the CUDA events `launch(events=...)` records."""
    backend, graph, data, idx, sums = bound
    n, batch = sizes.event_steps, sizes.batch
    events: list = []
    with backend._pace:
        for s in range(n):
            graph.launch(data, idx, s * batch, batch, 3 * sizes.enqueue_steps + s, sums, events=events)
    backend.stream.synchronize()
    times: dict[str, list[float]] = {}
    for name, start, end in events:
        times.setdefault(name, []).append(start.elapsed_time(end) * 1000.0)
    return {"steps": n, "batch": batch, "kernel_us": {k: round(statistics.mean(v), 2) for k, v in times.items()},
            "gpu_us_per_step": round(sum(sum(v) for v in times.values()) / n, 2),
            **({"note": "the simulator records no times (-1 ms an event)"} if sizes is SMOKE else {})}, None


def batches_fields(spec, train, sizes: Sizes):
    return {"seconds_per_epoch_by_batch": {str(b): _trained(spec, "cuda", train, 1, b)[2][0]
                                           for b in sizes.big_batches}}, None


def torch_checks(report: Report, train, smoke: bool) -> None:
    """PyTorch's eager loop and the same step in a CUDA graph, one epoch at batch 32: the peers."""
    reason = "smoke run: the simulator is not a GPU for PyTorch"
    if not smoke:
        try:
            import torch
            reason = "" if torch.cuda.is_available() else "torch.cuda.is_available() is False"
        except ImportError as exc:
            reason = f"PyTorch is not installed ({exc}); it is not one of modelc's requirements"
    if reason:
        report.skip("torch eager", reason)
        report.skip("torch cuda graph", reason)
        return
    xs = torch.tensor(np.ascontiguousarray(train[0]).reshape(len(train[0]), -1), device="cuda")
    ys = torch.tensor(np.asarray(train[1]), dtype=torch.long, device="cuda")
    report.run("torch eager", _torch_epoch, torch, xs, ys, False)
    report.run("torch cuda graph", _torch_epoch, torch, xs, ys, True)


def _torch_epoch(torch, xs, ys, graphed: bool, batch: int = 32):
    """specs/mnist.model in PyTorch (784-64-64-10, relu, relu, softmax cross-entropy, Adam 1e-3)
    for one epoch. `graphed`: the whole step (forward, backward, Adam) captured once in a CUDA
    graph on static tensors and replayed per batch; the last partial batch is left out (a
    graph's shapes are fixed)."""
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).cuda()
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, capturable=graphed)
    static_x, static_y = xs[:batch].clone(), ys[:batch].clone()

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    if graphed:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):           # warm-up on a side stream, as capture requires
            for _ in range(3):
                step(static_x, static_y)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_loss = step(static_x, static_y)
    order = torch.randperm(len(xs), device="cuda")
    ends = range(0, len(xs) // batch * batch if graphed else len(xs), batch)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for s in ends:
        idx = order[s:s + batch]
        if graphed:
            static_x.copy_(xs[idx])
            static_y.copy_(ys[idx])
            graph.replay()
        else:
            static_loss = step(xs[idx], ys[idx])
    torch.cuda.synchronize()
    return {"ok": bool(torch.isfinite(static_loss).item()), "torch": torch.__version__, "batch": batch,
            "steps": len(ends), "epoch_seconds": round(time.perf_counter() - t0, 4),
            "last_loss": float(static_loss.item())}, None


def memcheck(report: Report, smoke: bool, start: float) -> None:
    """compute-sanitizer's memcheck over three training steps of specs/mnist.model."""
    sanitizer = shutil.which("compute-sanitizer")
    if smoke or sanitizer is None:
        report.skip("memcheck", "smoke run: the simulator has no device memory to check" if smoke
                    else "compute-sanitizer is not on PATH (it comes with the CUDA toolkit)")
        return
    timeout, t0 = _left(start, 120), time.perf_counter()
    out, err, rc = _bounded([sanitizer, "--tool", "memcheck", sys.executable, "-c", MEMCHECK_SNIPPET], timeout)
    found = re.search(r"ERROR SUMMARY: (\d+) error", out + err)
    errors = int(found.group(1)) if found else None
    report.emit("memcheck", errors == 0 and rc == 0, errors=errors, exit_status=rc,
                timed_out=rc is None, seconds=round(time.perf_counter() - t0, 2),
                output_tail=(out + err)[-2000:] if errors != 0 else "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Check modelc's cuda target on this machine's NVIDIA GPU.")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu_check.jsonl",
                   help="also write the JSON lines here (default: bench/gpu_check.jsonl)")
    p.add_argument("--data", help="the folder holding mnist/ (default: MODELC_DATA, else the cache)")
    p.add_argument("--smoke", action="store_true",
                   help="test this script without a GPU: tiny runs under Numba's CUDA simulator")
    args = p.parse_args(argv)
    if args.smoke:      # before numba is first imported: the simulator is chosen then
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    start = time.perf_counter()
    sizes = SMOKE if args.smoke else FULL
    report = Report(args.out)
    from modelc.compiler.codegen.cuda_env import cuda_available
    ok, reason = cuda_available()
    if not ok or (not args.smoke and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"):
        reason = reason if not ok else "NUMBA_ENABLE_CUDASIM=1 is set: unset it, or pass --smoke"
        report.emit("device", False, reason=reason)
        print(f"gpu_check: no NVIDIA GPU can be used here ({reason}). Run it on a machine with one; "
              "to test the script itself without one, run bench/gpu_check.sh --smoke.", file=sys.stderr)
        return 1
    report.run("device", device_fields, args.smoke)
    report.run("doctor", doctor_fields)
    if args.smoke:
        report.skip("kernels", "smoke run: tests/test_cuda_sim.py runs these under the simulator")
    else:
        kernel_checks(report, start)
    loaded = report.run("data", lambda: ({"spec": sizes.mlp}, _data(sizes.mlp, args.data, sizes)))
    if loaded is None:
        sys.exit("gpu_check: no training data, so no training checks: give the MNIST folder (--data DIR)")
    train, test = loaded
    run = (train, test, sizes.epochs, sizes.batch, sizes.eval_batch)
    on_cuda = report.run("train cuda", train_fields, sizes.mlp, "cuda", *run)
    on_cpu = report.run("train cpu", train_fields, sizes.mlp, "cpu", *run)
    diff = on_cuda[1] - on_cpu[1] if on_cuda and on_cpu else None
    report.emit("accuracy cuda vs cpu", diff is not None and abs(diff) <= ACCURACY_TOLERANCE, difference=diff,
                cuda=on_cuda and on_cuda[1], cpu=on_cpu and on_cpu[1], tolerance=ACCURACY_TOLERANCE)
    model = report.run("determinism", determinism_fields, sizes.mlp, train, sizes)
    bound = model and report.run("enqueue", enqueue_fields, model, train, sizes)
    if bound:
        report.run("kernel times", kernel_time_fields, bound, sizes)
    else:
        report.emit("kernel times", False, error="not run: the determinism or enqueue check above failed")
    report.run("epoch kernel vs kernel by kernel", modes_fields, sizes.mlp, train, sizes)
    report.run("batches", batches_fields, sizes.mlp, train, sizes)
    cnn = report.run("cnn data", lambda: ({"spec": "specs/mnist_cnn.model" if sizes is FULL else "smoke convnet"},
                                          _data(sizes.cnn, args.data, sizes)))
    if cnn:
        report.run("cnn cuda", train_fields, sizes.cnn, "cuda", *cnn, 1, sizes.cnn_batch, sizes.eval_batch)
    torch_checks(report, train, args.smoke)
    memcheck(report, args.smoke, start)
    report.emit("summary", report.failed == 0, failed=report.failed,
                seconds=round(time.perf_counter() - start, 1), smoke=args.smoke)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
