"""Benchmark: training the keras-io MNIST convnet with modelc beside PyTorch and the GEMM floor, in one run.

    python bench/bench_cnn.py                          # cpu target, 3 epochs, 2 threads for everyone
    python bench/bench_cnn.py --limit 2048 --epochs 2  # a quick run on the first 2,048 samples
    python bench/bench_cnn.py --only torch,floor       # some columns alone
    python bench/bench_cnn.py --write bench/RESULTS.md

The network is the keras-io "Simple MNIST convnet": 28x28x1 (pixels / 255) ->
Conv2D(32, 3x3, relu, valid) -> MaxPooling2D(2) -> Conv2D(64, 3x3, relu) ->
MaxPooling2D(2) -> Flatten -> Dropout(0.5) -> Dense(10, softmax); 34,826
parameters; categorical cross-entropy on one-hot labels, Adam(lr=0.001,
epsilon=1e-7), batch 128, shuffled. modelc trains the spec (--spec, default
specs/mnist_cnn.model); PyTorch eager trains the same network in NCHW, its
native layout, on the same data; the floor is the convolution GEMMs of one
training step alone (conv1 and conv2 forward as im2col products, both kernel
gradients, conv2's input gradient; conv1 needs none) through the BLAS numpy
calls, timed per step and multiplied by the steps of an epoch.

Every column runs in its own subprocess (its peak memory is its own, a cold
compile is really cold, one failing column does not stop the others), all with
the same thread count (--threads: NUMBA_NUM_THREADS, OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS, MKL_NUM_THREADS, MODELC_THREADS and
torch.set_num_threads). Seconds per epoch are the median of the epochs after
the first; ratios compare figures measured in the same run, since the machine
is shared and noisy.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:   # run from a checkout without installing
    sys.path.insert(0, str(ROOT))
from benchlib import append_report, blas_info, median_after_first, peak_mb, torch_epochs  # noqa: E402 - bench/ is the script's own folder
SPEC = ROOT / "specs" / "mnist_cnn.model"
TRAIN_SAMPLES = 60000
COLUMNS = ("modelc", "torch", "floor", "startup")
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "MODELC_THREADS")


# ---------------------------------------------------------------- workers (run in subprocesses)

def _images(args):
    """MNIST as NHWC float32 (pixels / 255), one-hot float32 labels; the first --limit samples."""
    import numpy as np
    from modelc.runtime import data
    splits = data.load("mnist", data_dir=args.data, quiet=True)
    limit = args.limit or None
    x = (splits.train.x[:limit] / np.float32(255)).astype(np.float32).reshape(-1, 28, 28, 1)
    xt = (splits.test.x[:limit] / np.float32(255)).astype(np.float32).reshape(-1, 28, 28, 1)
    y, yt = splits.train.y[:limit], splits.test.y[:limit]
    return x, data.one_hot(y, 10).astype(np.float32), xt, data.one_hot(yt, 10).astype(np.float32), yt



def _blas_threads() -> list:
    try:
        from threadpoolctl import threadpool_info
        return sorted({i.get("num_threads") for i in threadpool_info() if i.get("user_api") == "blas"})
    except ImportError:
        return []


def worker_modelc(args) -> dict:
    """modelc.compile(spec, target, seed=0) and its fit API, as a user drives it."""
    started = time.perf_counter()
    import numpy as np

    import modelc
    x, y, xt, yt, _ = _images(args)
    loaded = time.perf_counter()
    model = modelc.compile(args.spec, target=args.target, seed=0)
    model.warm_up()                 # every graph compiled (or loaded from the cache folder)
    compiled = time.perf_counter()
    backend = model.backend
    # one training step, so that the start-up figure is "ready to train" (the weights move; the
    # benchmark's epochs start from there, which does not change their speed)
    handle = backend.upload(x[:args.batch], y[:args.batch])
    backend.train(handle, np.arange(min(args.batch, len(x)), dtype=np.int64), args.batch, 0, 1, 0)
    ready = time.perf_counter()
    result = {"compile_s": compiled - loaded, "first_step_s": ready - loaded, "process_s": ready - started}
    if args.startup_only:
        return result
    history = model.fit(x, y, epochs=args.epochs, batch_size=args.batch, verbose=0, seed=0, shuffle=True)
    accuracy = model.evaluate(xt, yt, batch_size=1024, return_dict=True)["accuracy"]
    import numba
    return {**result, "epoch_s": [e["seconds"] for e in history.epochs],
            "train_loss": [round(e["loss"], 4) for e in history.epochs], "samples": len(x),
            "accuracy": accuracy, "peak_mb": peak_mb(), "numba_threads": numba.get_num_threads(),
            "blas_threads": _blas_threads(), "kernels_per_step": getattr(backend, "kernels_per_step", None)}


def worker_torch(args) -> dict:
    """The same network in PyTorch eager (NCHW), the same batches, optimizer and data."""
    import torch
    torch.set_num_threads(args.threads)
    x, y, xt, yt, labels = _images(args)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(1600, 10))
    assert sum(p.numel() for p in model.parameters()) == 34826
    xs = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    ys = torch.from_numpy(y)                    # one-hot rows: cross-entropy takes class probabilities
    seconds, losses = torch_epochs(model, xs, ys, args.epochs, args.batch,
                                   generator=torch.Generator().manual_seed(0), track_loss=True)
    with torch.no_grad():
        out = torch.cat([model(torch.from_numpy(xt[i:i + 1024]).permute(0, 3, 1, 2))
                         for i in range(0, len(xt), 1024)])
    accuracy = float((out.argmax(1).numpy() == labels).mean())
    return {"epoch_s": seconds, "train_loss": losses, "samples": len(x), "accuracy": accuracy,
            "peak_mb": peak_mb(), "threads": torch.get_num_threads(), "torch": torch.__version__}


def floor_products(batch: int):
    """The convolution GEMMs of one training step (NHWC im2col, weights as (kh*kw*cin, cout)):
    name -> (a, b, out) with out = a @ b."""
    import numpy as np
    rng = np.random.default_rng(0)

    def r(*shape):
        return rng.random(shape, dtype=np.float32)

    m1, m2 = batch * 26 * 26, batch * 11 * 11      # output pixels of conv1 and conv2
    cols1, w1, y1 = r(m1, 9), r(9, 32), r(m1, 32)      # conv1: 3x3x1 patches -> 32 channels
    cols2, w2, y2 = r(m2, 288), r(288, 64), r(m2, 64)  # conv2: 3x3x32 patches -> 64 channels
    return {
        "conv1 forward": (cols1, w1, np.empty((m1, 32), np.float32)),
        "conv1 kernel gradient": (cols1.T, y1, np.empty((9, 32), np.float32)),
        "conv2 forward": (cols2, w2, np.empty((m2, 64), np.float32)),
        "conv2 kernel gradient": (cols2.T, y2, np.empty((288, 64), np.float32)),
        "conv2 input gradient": (y2, w2.T, np.empty((m2, 288), np.float32)),
    }


def worker_floor(args) -> dict:
    """The step's convolution GEMMs alone, through numpy's BLAS (np.matmul into preallocated
    outputs): no im2col, col2im, pooling, activation, dense layer or optimizer. Each round
    times --floor-steps steps one by one; seconds per epoch = the median step x steps per epoch."""
    import numpy as np
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=args.threads, user_api="blas")
    except ImportError:
        pass
    products = list(floor_products(args.batch).items())
    samples = args.limit or TRAIN_SAMPLES
    steps = -(-samples // args.batch)
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for _, (a, b, _) in products)

    def step():
        for _, (a, b, out) in products:
            np.matmul(a, b, out=out)

    for _ in range(3):
        step()
    per_round = max(1, min(steps, args.floor_steps))
    seconds, per_step, fastest = [], [], float("inf")
    for _ in range(args.epochs):     # a round per epoch: the median step of --floor-steps steps
        times = []
        for _ in range(per_round):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        fastest = min(fastest, min(times))
        per_step.append(t)
        seconds.append(t * steps)
    breakdown = {}
    for name, (a, b, out) in products:
        t0 = time.perf_counter()
        for _ in range(10):
            np.matmul(a, b, out=out)
        breakdown[name] = round((time.perf_counter() - t0) / 10 * 1000, 3)
    return {"epoch_s": seconds, "step_ms": [round(t * 1000, 3) for t in per_step], "steps": steps,
            "fastest_step_ms": round(fastest * 1000, 3), "samples": samples, "gflop_per_step": flops / 1e9, "ms_per_product": breakdown,
            "peak_mb": peak_mb(), "blas_threads": _blas_threads()}



WORKERS = {"modelc": worker_modelc, "torch": worker_torch, "floor": worker_floor}


# ---------------------------------------------------------------- the orchestrator

def thread_env(threads: int, **extra) -> dict:
    env = dict(os.environ, **extra)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    return env


def run_worker(kind: str, args, extra: list[str] = (), env: dict | None = None) -> dict:
    """A worker in a subprocess; any failure (exit status, time-out, no result) comes back as {"error": ...}."""
    command = [sys.executable, __file__, "--worker", kind, "--spec", str(args.spec), "--target", args.target,
               "--batch", str(args.batch), "--epochs", str(args.epochs), "--threads", str(args.threads),
               "--limit", str(args.limit), "--floor-steps", str(args.floor_steps)]
    command += (["--data", args.data] if args.data else []) + list(extra)
    print(f"[bench_cnn] {kind} {' '.join(extra)}".rstrip() + " ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=args.timeout,
                              env=env or thread_env(args.threads))
    except subprocess.TimeoutExpired:
        return {"error": [f"timed out after {args.timeout:.0f} s"]}
    lines = (done.stdout or "").strip().splitlines()
    result = None
    if lines:
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError:
            result = None
    if done.returncode != 0 or not isinstance(result, dict):
        if isinstance(result, dict) and "error" in result:
            error = result["error"]
        else:
            tail = (done.stderr or done.stdout or "").strip().splitlines()
            errors = [line for line in tail if "error" in line.lower()]
            error = (errors or tail or [f"exit status {done.returncode}"])[-1:]
        print(f"[bench_cnn] {kind} failed: {' '.join(error)}", file=sys.stderr)
        return {"error": error, "stderr_tail": (done.stderr or "").strip().splitlines()[-15:]}
    print(f"[bench_cnn] {kind} done in {time.perf_counter() - t0:.0f} s: {json.dumps(result)}", file=sys.stderr)
    return result



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=str(SPEC), help="the convnet's .model spec (default specs/mnist_cnn.model)")
    parser.add_argument("--target", default="cpu", choices=["cpu", "cuda", "numpy"], help="modelc's target")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per column (the first is not counted)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--limit", type=int, default=0, help="train on the first N samples (0: all 60,000)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every column (BLAS, Numba, OpenMP, torch)")
    parser.add_argument("--only", default=",".join(COLUMNS), help=f"comma-separated, of {', '.join(COLUMNS)}")
    parser.add_argument("--floor-steps", type=int, default=50, help="steps timed per floor round")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a column is given up")
    parser.add_argument("--data", default=os.environ.get("MODELC_DATA"))
    parser.add_argument("--write", metavar="FILE", help="append the results as a Markdown section")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--startup-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        try:
            print(json.dumps(WORKERS[args.worker](args)))
        except Exception as e:  # noqa: BLE001 - reported to the orchestrator as this column's error
            import traceback
            traceback.print_exc()
            print(json.dumps({"error": [f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]]}))
            return 1
        return 0

    columns = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(columns) - set(COLUMNS))
    if unknown:
        parser.error(f"--only: unknown column(s) {', '.join(unknown)}; choose from {', '.join(COLUMNS)}")
    if ("modelc" in columns or "startup" in columns) and not Path(args.spec).is_file():
        print(f"note: the spec {args.spec} does not exist; the modelc columns will report an error "
              "(give --spec)", file=sys.stderr)
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    if "modelc" in columns:
        results["modelc"] = run_worker("modelc", args)
    if "torch" in columns:
        if importlib.util.find_spec("torch") is None:
            print("note: PyTorch is not installed, so the torch column is skipped "
                  "(pip install torch==2.13.0)", file=sys.stderr)
            results["torch"] = {"skipped": "PyTorch is not installed"}
        else:
            results["torch"] = run_worker("torch", args)
    if "floor" in columns:
        results["floor"] = run_worker("floor", args)
    if "startup" in columns:
        with tempfile.TemporaryDirectory(prefix="bench_cnn_cache_") as cache:
            env = thread_env(args.threads, MODELC_CACHE_DIR=cache, NUMBA_CACHE_DIR=cache)
            results["cold"] = run_worker("modelc", args, ["--startup-only"], env)
            results["warm"] = run_worker("modelc", args, ["--startup-only"], env)
    load_after = os.getloadavg()
    print(f"[bench_cnn] results: {json.dumps(results)}", file=sys.stderr)

    report = format_report(args, results, load_before, load_after)
    print(report)
    if args.write:
        append_report(args.write, report)
    return 0


def _error(result: dict) -> str:
    return " ".join(result.get("error", [])).replace("|", "/")[:160]


def code_version() -> str:
    """The commit measured, and whether modelc/ had changes not yet committed (a shared working tree)."""
    try:
        head = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=ROOT, capture_output=True,
                              text=True, timeout=30).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "modelc"], cwd=ROOT, capture_output=True,
                                 text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    head = head if len(head) <= 90 else head[:87] + "..."
    return f"{head or 'unknown'}" + (f" (+ {len(changed)} uncommitted file(s) under modelc/)" if changed else "")


def format_report(args, results: dict, load_before, load_after) -> str:
    command = "python bench/bench_cnn.py " + " ".join(a for a in sys.argv[1:] if a)
    samples = args.limit or TRAIN_SAMPLES
    try:
        spec_name = Path(args.spec).resolve().relative_to(ROOT)
    except ValueError:
        spec_name = args.spec
    lines = [f"## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC — MNIST convnet (bench_cnn), target {args.target}",
             "",
             f"Command: `{command.strip()}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"{platform.system()} {platform.release()}; load average before {' '.join(f'{v:.2f}' for v in load_before)}, "
             f"after {' '.join(f'{v:.2f}' for v in load_after)}  ",
             f"Code: {code_version()}  ",
             f"BLAS: {blas_info()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}  ",
             f"Threads: {args.threads} for every column ({', '.join(THREAD_VARIABLES)}, torch.set_num_threads)  ",
             f"Spec: {spec_name}; batch {args.batch}; {args.epochs} epochs of {samples:,} samples per column "
             + (f"(median of epochs 2..{args.epochs})." if args.epochs > 1 else "(one epoch: it includes warming up)."),
             "",
             "| column | s/epoch | samples/s | epochs (s) | test acc | peak MB |",
             "|---|---|---|---|---|---|"]
    times = {}
    names = {"modelc": f"modelc {args.target}", "torch": "PyTorch eager",
             "floor": "floor: the step's conv GEMMs (numpy BLAS)"}
    for key in ("modelc", "torch", "floor"):
        if key not in results:
            continue
        r = results[key]
        name = names[key]
        if key == "torch" and "torch" in r:
            name = f"PyTorch {r['torch']} eager"
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | | | |")
            continue
        if "error" in r:
            lines.append(f"| {name} | error: {_error(r)} | | | | |")
            continue
        t = median_after_first(r["epoch_s"])
        times[key] = t
        acc = f"{r['accuracy']:.4f}" if "accuracy" in r else "—"
        lines.append(f"| {name} | {t:.3f} | {samples / t:,.0f} | {', '.join(f'{s:.2f}' for s in r['epoch_s'])} "
                     f"| {acc} | {r['peak_mb']:.0f} |")
    lines.append("")
    if "modelc" in times and "torch" in times:
        lines.append(f"modelc / PyTorch throughput: {times['torch'] / times['modelc']:.2f}x "
                     "(modelc's samples/s over PyTorch's; above 1, modelc is faster).  ")
    if "modelc" in times and "floor" in times:
        lines.append(f"modelc / floor time: {times['modelc'] / times['floor']:.2f}x "
                     "(modelc's seconds per epoch over the conv GEMMs' alone; 1 is the floor).  ")
    if "torch" in times and "floor" in times:
        lines.append(f"PyTorch / floor time: {times['torch'] / times['floor']:.2f}x.  ")
    if "cold" in results or "warm" in results:
        def start(r):
            if "error" in r:
                return f"error: {_error(r)}"
            return (f"compile {r['compile_s']:.2f} s (modelc.compile + warm_up), {r['first_step_s']:.2f} s to "
                    f"the end of the first step, {r['process_s']:.2f} s from process start")
        lines.append(f"Cold start (new process, empty MODELC_CACHE_DIR and NUMBA_CACHE_DIR): "
                     f"{start(results.get('cold', {'error': ['not run']}))}.  ")
        lines.append(f"Warm start (new process, that cache folder filled): "
                     f"{start(results.get('warm', {'error': ['not run']}))}.")
    lines.append("")
    floor = results.get("floor", {})
    if "ms_per_product" in floor:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in floor["ms_per_product"].items())
        lines.append(f"Floor: {floor['gflop_per_step']:.2f} GFLOP per step, "
                     f"{statistics.median(floor['step_ms'][1:] or floor['step_ms']):.1f} ms per step "
                     f"x {floor['steps']} steps (fastest step {floor['fastest_step_ms']:.1f} ms); ms per product (mean of 10): "
                     f"{parts}. It leaves out im2col/col2im, "
                     "pooling, activations, dropout, the dense layer and Adam.  ")
    m = results.get("modelc", {})
    if "epoch_s" in m:
        lines.append(f"modelc: training loss by epoch {m['train_loss']}; Numba threads {m['numba_threads']}, "
                     f"BLAS threads {m['blas_threads']}; compile in its process (the usual cache folder) "
                     f"{m['compile_s']:.2f} s.  ")
    t = results.get("torch", {})
    if "epoch_s" in t:
        lines.append(f"PyTorch: training loss by epoch {t['train_loss']}; threads {t['threads']}.")
    return "\n".join(lines).rstrip()


if __name__ == "__main__":
    sys.exit(main())
