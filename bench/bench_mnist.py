"""Benchmark: training the MNIST spec with modelc beside peers, measured in one run.

    python bench/bench_mnist.py                       # cpu target, batches 32 64 128, numpy + torch peers
    python bench/bench_mnist.py --target cuda         # on a machine with an NVIDIA GPU
    python bench/bench_mnist.py --write bench/RESULTS.md

Every configuration runs in its own subprocess (so peak memory is its own and
a cold compile is really cold) and trains the same model: 784-64-64-10, relu,
relu, softmax, sparse categorical cross-entropy, Adam(0.001), shuffled
batches. Seconds per epoch are the median of the epochs after the first;
ratios compare figures measured in the same run, since the machine is shared
and noisy. The peers are a plain-NumPy implementation of the same step and
PyTorch eager (when installed).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
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
SPEC = ROOT / "specs" / "mnist.model"


# ---------------------------------------------------------------- workers (run in subprocesses)

def _mnist(data_dir):
    from modelc.runtime import data
    splits = data.load("mnist", data_dir=data_dir, quiet=True)
    x = splits.train.x.reshape(len(splits.train.x), -1) / 255.0
    xt = splits.test.x.reshape(len(splits.test.x), -1) / 255.0
    return (x.astype("float32"), splits.train.y, xt.astype("float32"), splits.test.y)



def worker_modelc(args) -> dict:
    start = time.perf_counter()
    import numpy as np

    import modelc
    from modelc.runtime import data
    splits = data.load("mnist", data_dir=args.data, quiet=True)
    x = splits.train.x * np.float32(1 / 255)
    xt = splits.test.x * np.float32(1 / 255)
    loaded = time.perf_counter()
    model = modelc.compile(str(SPEC), target=args.target, seed=0)
    backend = model.backend
    # time to the end of the first training step: code generation + (cold) compile or (warm) cache load
    data_handle = backend.upload(x, splits.train.y)
    order = np.arange(len(x), dtype=np.int64)
    backend.train(data_handle, order, args.batch, 0, 1, 0)
    ready = time.perf_counter()
    if args.startup_only:
        return {"startup_s": ready - loaded, "process_s": ready - start}
    history = model.fit(x, splits.train.y, epochs=args.epochs, batch_size=args.batch, verbose=0, seed=0)
    seconds = [e["seconds"] for e in history.epochs]
    accuracy = model.evaluate(xt, splits.test.y, batch_size=1024, return_dict=True)["accuracy"]
    return {"epoch_s": seconds, "accuracy": accuracy, "peak_mb": peak_mb(),
            "kernels_per_step": backend.kernels_per_step, "launch_mode": getattr(backend, "launch_mode", None)}


def worker_numpy(args) -> dict:
    """The same training step in plain NumPy: what a careful person writes by hand."""
    import numpy as np
    x, y, xt, yt = _mnist(args.data)
    rng = np.random.default_rng(0)
    sizes = [784, 64, 64, 10]
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params += [(rng.standard_normal((fan_in, fan_out)) * np.sqrt(2 / fan_in)).astype(np.float32),
                   np.zeros(fan_out, np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    lr, b1, b2, eps = 0.001, 0.9, 0.999, 1e-7
    step = 0
    seconds = []
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        order = rng.permutation(len(x))
        for s in range(0, len(x), args.batch):
            idx = order[s:s + args.batch]
            xb, yb = x[idx], y[idx]
            w1, c1, w2, c2, w3, c3 = params
            z1 = xb @ w1 + c1
            h1 = np.maximum(z1, 0)
            z2 = h1 @ w2 + c2
            h2 = np.maximum(z2, 0)
            z3 = h2 @ w3 + c3
            z3 = z3 - z3.max(axis=1, keepdims=True)
            p = np.exp(z3)
            p /= p.sum(axis=1, keepdims=True)
            d3 = p
            d3[np.arange(len(yb)), yb] -= 1
            d3 /= len(yb)
            g3 = h2.T @ d3
            d2 = (d3 @ w3.T) * (z2 > 0)
            g2 = h1.T @ d2
            d1 = (d2 @ w2.T) * (z1 > 0)
            g1 = xb.T @ d1
            grads = [g1, d1.sum(0), g2, d2.sum(0), g3, d3.sum(0)]
            step += 1
            alpha = lr * np.sqrt(1 - b2 ** step) / (1 - b1 ** step)
            for p_, g_, m_, v_ in zip(params, grads, m, v):
                m_ += (g_ - m_) * (1 - b1)
                v_ += (g_ * g_ - v_) * (1 - b2)
                p_ -= alpha * m_ / (np.sqrt(v_) + eps)
        seconds.append(time.perf_counter() - t0)
    w1, c1, w2, c2, w3, c3 = params
    out = np.maximum(np.maximum(xt @ w1 + c1, 0) @ w2 + c2, 0) @ w3 + c3
    return {"epoch_s": seconds, "accuracy": float((out.argmax(1) == yt).mean()), "peak_mb": peak_mb()}


def worker_torch(args) -> dict:
    import numpy as np
    import torch
    x, y, xt, yt = _mnist(args.data)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                torch.nn.ReLU(), torch.nn.Linear(64, 10))
    seconds, _ = torch_epochs(model, torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), args.epochs,
                              args.batch)
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean())
    return {"epoch_s": seconds, "accuracy": accuracy, "peak_mb": peak_mb(),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def worker_floor(args) -> dict:
    """The eight matrix products of a training step alone (3 forward, 2 input
    gradients, 3 weight gradients), through the same BLAS modelc calls, with no
    Python per step: the floor no implementation of this step can beat."""
    import numpy as np
    from numba import njit
    from modelc.threads import configure_threads
    configure_threads()

    @njit(cache=False)
    def products(x, w1, w2, w3, h1, h2, o, d2, d1, g1, g2, g3, batch, steps):
        for s in range(steps):
            start = (s * batch) % (x.shape[0] - batch)
            xb = x[start:start + batch]
            np.dot(xb, w1, h1)
            np.dot(h1, w2, h2)
            np.dot(h2, w3, o)
            np.dot(o, w3.T, d2)
            np.dot(h2.T, o, g3)
            np.dot(d2, w2.T, d1)
            np.dot(h1.T, d2, g2)
            np.dot(xb.T, d1, g1)

    x = np.random.default_rng(0).random((60000, 784), dtype=np.float32)
    f = np.float32
    b = args.batch
    arrays = [np.ones((784, 64), f), np.ones((64, 64), f), np.ones((64, 10), f), np.zeros((b, 64), f),
              np.zeros((b, 64), f), np.zeros((b, 10), f), np.zeros((b, 64), f), np.zeros((b, 64), f),
              np.zeros((784, 64), f), np.zeros((64, 64), f), np.zeros((64, 10), f)]
    steps = -(-60000 // b)
    products(x, *arrays, b, 2)
    seconds = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        products(x, *arrays, b, steps)
        seconds.append(time.perf_counter() - t0)
    return {"epoch_s": seconds}



WORKERS = {"modelc": worker_modelc, "numpy": worker_numpy, "torch": worker_torch, "floor": worker_floor}


# ---------------------------------------------------------------- the orchestrator

def run_worker(kind: str, args, extra: list[str] = (), env: dict | None = None, target: str | None = None) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--batch", str(args.batch), "--epochs",
               str(args.epochs), "--target", target or args.target] + (["--data", args.data] if args.data else [])
    done = subprocess.run(command + list(extra), capture_output=True, text=True, env=env or os.environ.copy(),
                          cwd=ROOT)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        errors = [line for line in lines if "error" in line.lower()]
        return {"error": (errors or lines)[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_peer(peer: str, args) -> dict:
    """A peer is another framework, or `cpu`: modelc's own cpu target beside the one measured."""
    if peer == "cpu":
        return run_worker("modelc", args, target="cpu")
    return run_worker(peer, args)



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="cpu", choices=["cpu", "cuda", "numpy"])
    parser.add_argument("--batches", default="32,64,128")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per configuration (the first is not counted)")
    parser.add_argument("--peers", default="numpy,torch",
                        help="comma-separated: numpy, torch, cpu (modelc's cpu target; added for --target cuda)")
    parser.add_argument("--data", default=os.environ.get("MODELC_DATA"))
    parser.add_argument("--write", metavar="FILE", help="append the results as a Markdown section")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--startup-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return 0

    rows = []
    peers = [p for p in args.peers.split(",") if p]
    if args.target != "cpu" and "cpu" not in peers:
        peers.insert(0, "cpu")      # a GPU run is reported beside the cpu target
    for batch in [int(b) for b in args.batches.split(",")]:
        args.batch = batch
        row = {"batch": batch, "modelc": run_worker("modelc", args), "floor": run_worker("floor", args)}
        for peer in peers:
            row[peer] = run_peer(peer, args)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, MODELC_CACHE_DIR=cache, NUMBA_CACHE_DIR=cache)
        args.batch = 32
        cold = run_worker("modelc", args, ["--startup-only"], env)
        warm = run_worker("modelc", args, ["--startup-only"], env)

    report = format_report(args, rows, cold, warm, peers)
    print(report)
    if args.write:
        append_report(args.write, report)
    return 0


def format_report(args, rows, cold, warm, peers) -> str:
    unset = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v not in os.environ]
    prefix = f"env -u {' -u '.join(unset)} " if unset else ""
    command = prefix + "python bench/bench_mnist.py " + " ".join(a for a in sys.argv[1:] if a)
    lines = [f"## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC — target {args.target}",
             "",
             f"Command: `{command.strip()}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"{platform.system()} {platform.release()}; MODELC_THREADS={os.environ.get('MODELC_THREADS', '1')}  ",
             f"BLAS: {blas_info()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}  ",
             f"Epochs per configuration: {args.epochs} (median of epochs 2..{args.epochs}); MNIST 60,000 samples. "
             "The floor is the step's eight matrix products alone, through the same BLAS.",
             "",
             "| batch | modelc s/epoch | samples/s | test acc | peak MB | floor s/epoch | modelc / floor | "
             + " | ".join(f"{p} s/epoch | modelc speed-up vs {p}" for p in peers) + " |",
             "|---|---|---|---|---|---|---|" + "---|---|" * len(peers)]
    for row in rows:
        m = row["modelc"]
        if "error" in m:
            lines.append(f"| {row['batch']} | error: {m['error']} |")
            continue
        t = median_after_first(m["epoch_s"])
        cells = [str(row["batch"]), f"{t:.3f}", f"{60000 / t:,.0f}", f"{m['accuracy']:.4f}", f"{m['peak_mb']:.0f}"]
        floor = row["floor"]
        if "error" in floor:
            cells += ["n/a", "n/a"]
        else:
            ft = median_after_first(floor["epoch_s"])
            cells += [f"{ft:.3f}", f"{t / ft:.2f}x"]
        for peer in peers:
            p = row[peer]
            if "error" in p:
                cells += ["n/a", f"({' '.join(p['error'])[:60]})"]
            else:
                pt = median_after_first(p["epoch_s"])
                cells += [f"{pt:.3f}", f"{pt / t:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    launches = rows[0]["modelc"].get("kernels_per_step") if rows else None
    lines += ["",
              f"First start on a machine (empty cache folder: the cpu kernels compile once), new process, "
              f"to the end of the first step: {cold.get('startup_s', float('nan')):.2f} s; warm start (cache "
              f"filled): {warm.get('startup_s', float('nan')):.2f} s. A spec never compiled before starts "
              "like a warm one (bench/startup.py)."]
    mode = rows[0]["modelc"].get("launch_mode") if rows else None
    if launches:
        lines.append(f"Kernels per training step: {launches}" + (f", run as: {mode}." if mode else "."))
    for peer in peers:
        for row in rows:
            p = row[peer]
            if "error" not in p:
                extra = {k: v for k, v in p.items() if k in ("threads", "torch", "kernels_per_step") and v}
                lines.append(f"{peer} at batch {row['batch']}: test accuracy {p['accuracy']:.4f}, peak "
                             f"{p['peak_mb']:.0f} MB {extra if extra else ''}".rstrip())
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
