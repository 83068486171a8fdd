"""Benchmark: data-parallel training on MPI, 1 process against N ranks, and what N machines would give.

    python bench/bench_mpi.py                          # the MNIST MLP and convnet, 1 and 2 ranks
    python bench/bench_mpi.py --write bench/RESULTS.md

Each configuration is its own job: one process (the whole-epoch compiled loop)
or `mpiexec -n N` ranks (each step split around one Allreduce), training the
same spec on the same MNIST samples with MODELC_THREADS=1 per rank. samples/s
counts the global batch's samples; the 2-rank figure is divided by the
1-process figure measured in the same run.

The 2-rank job also times the Allreduce of the step's buffer (gradients, moving
statistics, sums and the stop flag) alone, and splits its step into the
compute a rank does on its share and the fixed cost of stepping in two phases
(packing, two calls, Python). From those, a projection for N machines on a
10 Gb/s network with a ring allreduce (the algorithm MPI libraries use for
large buffers): each rank sends and receives 2 (N-1)/N of the buffer, plus a
latency per message (ALPHA below; an assumption, stated in the output, not a
measurement):

    step(N) = compute(1 process) / N + fixed + 2 (N-1)/N * bytes / 1.25 GB/s + 2 (N-1) * ALPHA
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
from benchlib import append_report, blas_info  # noqa: E402 - bench/ is the script's own folder

SPECS = {"MLP": "specs/mnist.model", "convnet": "specs/mnist_cnn.model"}
BANDWIDTH = 10e9 / 8            # bytes/s: 10 Gb/s
ALPHA = 25e-6                   # s per message on 10 GbE with TCP (assumed)
ALLREDUCE_REPEATS = 200


def worker(args) -> dict:
    """One job's rank: train `args.samples` samples for `args.epochs` epochs; rank 0 reports."""
    import numpy as np

    import modelc
    from modelc.runtime import parallel
    model = modelc.compile(str(ROOT / args.spec), target="cpu", seed=0)
    (x, y), _ = model.load_data(quiet=True)
    x, y = x[:args.samples], y[:args.samples]
    model.warm_up()
    group = parallel.world()
    seconds = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        model.fit(x, y, epochs=model.epochs_done + 1, initial_epoch=model.epochs_done, verbose=0)
        seconds.append(time.perf_counter() - start)
    out = {"ranks": group.size, "epoch_s": min(seconds), "samples": len(x), "batch": model.settings.batch,
           "loss": model.history.epochs[-1]["loss"]}
    if group.size > 1:
        buffer = np.zeros(parallel.exchange_size(model.program) + len(model.program.result_names) + 1,
                          np.float32)
        group.allreduce(buffer)
        start = time.perf_counter()
        for _ in range(ALLREDUCE_REPEATS):
            group.allreduce(buffer)
        out.update(allreduce_s=(time.perf_counter() - start) / ALLREDUCE_REPEATS, buffer_bytes=buffer.nbytes)
    if group.rank == 0:
        Path(args.out).write_text(json.dumps(out))
    return out


def run(spec: str, ranks: int, samples: int, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [__file__, "--worker", "--spec", spec, "--samples", str(samples), "--epochs", str(epochs),
                   "--out", str(out)]
        if ranks > 1:   # python -m mpi4py: an exception on one rank ends them all
            command = [str(Path(sys.executable).with_name("mpiexec")), "-n", str(ranks), sys.executable,
                       "-m", "mpi4py"] + command
        else:
            command = [sys.executable] + command
        env = {**os.environ, "MODELC_THREADS": "1"}
        subprocess.run(command, check=True, env=env, cwd=ROOT, timeout=3600)
        return json.loads(out.read_text())


def projection(one: dict, two: dict, machines: int) -> float:
    """samples/s on `machines` ranks on a 10 Gb/s network, from the measured 1- and 2-rank steps."""
    steps = -(-one["samples"] // one["batch"])
    compute = one["epoch_s"] / steps                      # a whole batch in one process
    fixed = max(0.0, two["epoch_s"] / steps - compute / 2 - two["allreduce_s"])
    n = machines
    ring = 2 * (n - 1) / n * two["buffer_bytes"] / BANDWIDTH + 2 * (n - 1) * ALPHA if n > 1 else 0.0
    step = compute / n + (fixed if n > 1 else 0.0) + ring
    return one["batch"] / step


def report(results: dict, command: str, ranks: int) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {now} — data-parallel on MPI (cpu target)", "",
             f"Command: `{command}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
             f"MODELC_THREADS=1 per rank  ", f"BLAS: {blas_info()}  ", "",
             f"| network | samples | batch | 1 process samples/s | {ranks} ranks samples/s | speed-up | "
             f"allreduce per step | buffer | loss 1 / {ranks} |", "|---|---|---|---|---|---|---|---|---|"]
    for name, (one, many) in results.items():
        rate = lambda r: r["samples"] / r["epoch_s"]   # noqa: E731
        lines.append(f"| {name} | {one['samples']:,} | {one['batch']} | {rate(one):,.0f} | {rate(many):,.0f} | "
                     f"{rate(many) / rate(one):.2f}x | {many['allreduce_s'] * 1e6:.0f} µs | "
                     f"{many['buffer_bytes'] / 1024:,.0f} KiB | {one['loss']:.5f} / {many['loss']:.5f} |")
    lines += ["", f"Projection for N machines on 10 Gb/s (ring allreduce, {ALPHA * 1e6:.0f} µs per message "
              "assumed; compute and fixed costs from the rows above):", "",
              "| network | " + " | ".join(f"N={n}" for n in (1, 2, 4, 8, 16)) + " |", "|---|" + "---|" * 5]
    for name, (one, many) in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{projection(one, many, n):,.0f}" for n in (1, 2, 4, 8, 16))
                     + " samples/s |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--mlp-samples", type=int, default=60000)
    parser.add_argument("--cnn-samples", type=int, default=6400)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per job; the fastest counts")
    parser.add_argument("--write", metavar="RESULTS.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    results = {}
    for name, spec in SPECS.items():
        samples = args.mlp_samples if name == "MLP" else args.cnn_samples
        results[name] = (run(spec, 1, samples, args.epochs), run(spec, args.ranks, samples, args.epochs))
    text = report(results, "python " + " ".join(sys.argv), args.ranks)
    print(text)
    if args.write:
        append_report(args.write, text)


if __name__ == "__main__":
    main()
