"""Benchmark: how soon the cpu target trains, measured as whole processes.

    python bench/startup.py                          # 5 runs of each
    python bench/startup.py --runs 7 --write bench/RESULTS.md

The spec is the MNIST MLP of specs/mnist.model on 512 samples for one epoch
(`mnist(scale=1/255, limit=512)`, validate test). Every figure is the median
of --runs processes, and each run is measured beside the floor, a process
running `python -c "import numpy, numba"`, timed in the same run:

* cold: a spec never compiled before (its hidden widths differ in every run),
  from process start to the end of its first training step. The cache folder
  (new for this benchmark) holds only what earlier specs left in it.
* warm: the same spec again, in a new process.
* recompile: in one process, compiling the same spec a second time and
  running a training step.
* evaluate and predict after fit: in one process, after one epoch.
* `modelc train`, whole process, cold and warm.
* first run on this machine: an empty cache folder (the kernels compile).
"""
from __future__ import annotations

import argparse
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
from benchlib import append_report  # noqa: E402 - bench/ is the script's own folder
SPEC = """model startup_{tag}
input  image: f32[28, 28]
target digit: int[] classes 10
network {{
    image -> flatten -> dense({w1}, relu, init=he_normal) -> dense({w2}, relu) -> dense(10, softmax) => probs
}}
loss      sparse_categorical_crossentropy(digit, probs)
optimizer adam(lr=0.001)
metrics   accuracy
train {{
    data     mnist(scale=1/255, limit=512)
    batch    32
    epochs   1
    seed     0
    validate test
}}
"""


# ---------------------------------------------------------------- the worker (a process of its own)

def worker(spec: str, started: float) -> dict:
    """Compile, bind the data, train one step; then the in-process figures."""
    import modelc
    model = modelc.compile(spec, target="cpu")
    splits = model.load_splits(quiet=True)
    x, y = splits.train.x, splits.train.y
    model.fit(x[:32], y[:32], epochs=1, batch_size=32, verbose=0)
    first_step = time.time() - started
    t = time.perf_counter()
    again = modelc.compile(spec, target="cpu")
    again.fit(x[:32], y[:32], epochs=1, batch_size=32, verbose=0)
    recompile = time.perf_counter() - t
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    t = time.perf_counter()
    model.evaluate(splits.test.x, splits.test.y)
    evaluate = time.perf_counter() - t
    t = time.perf_counter()
    model.predict(splits.test.x)
    predict = time.perf_counter() - t
    return {"first_step": first_step, "recompile": recompile, "evaluate": evaluate, "predict": predict}


# ---------------------------------------------------------------- the orchestrator

def _timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def _worker_run(spec: Path, env: dict) -> dict:
    env = dict(env, STARTUP_T0=repr(time.time()))
    done = subprocess.run([sys.executable, __file__, "--worker", str(spec)], env=env, capture_output=True,
                          text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(runs: int) -> dict:
    floor_cmd = [sys.executable, "-c", "import numpy, numba"]
    train_cmd = [sys.executable, "-m", "modelc", "train"]
    out: dict[str, list[float]] = {k: [] for k in ("floor", "machine", "cold", "warm", "recompile", "evaluate",
                                                   "predict", "train_cold", "train_warm")}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        env = dict(os.environ, MODELC_CACHE_DIR=str(folder / "cache"))
        env.pop("NUMBA_CACHE_DIR", None)

        def spec(tag: str, w1: int, w2: int) -> Path:
            path = folder / f"{tag}.model"
            path.write_text(SPEC.format(tag=tag, w1=w1, w2=w2))
            return path

        out["machine"].append(_worker_run(spec("machine", 64, 64), env)["first_step"])
        for run in range(runs):
            out["floor"].append(_timed(floor_cmd, env))
            cold = spec(f"cold{run}", 65 + run, 63 - run)
            out["cold"].append(_worker_run(cold, env)["first_step"])
            warm = _worker_run(cold, env)
            for key in ("recompile", "evaluate", "predict"):
                out[key].append(warm[key])
            out["warm"].append(warm["first_step"])
            trained = spec(f"train{run}", 48 + run, 40 - run)
            out["train_cold"].append(_timed(train_cmd + [str(trained), "--quiet"], env))
            out["train_warm"].append(_timed(train_cmd + [str(trained), "--quiet"], env))
    return out


def report(out: dict, runs: int) -> str:
    med = {k: statistics.median(v) for k, v in out.items() if v}
    spread = {k: f"{min(v):.2f}–{max(v):.2f}" for k, v in out.items() if v}
    command = "python bench/startup.py " + " ".join(sys.argv[1:])
    rows = [("cold: a new spec, process start to its first training step", "cold"),
            ("warm: the same spec, a new process", "warm"),
            ("recompile: the same spec again in one process, with a step", "recompile"),
            ("the first evaluate after fit (512 test samples)", "evaluate"),
            ("the first predict after fit (512 test samples)", "predict"),
            ("`modelc train`, a new spec, whole process", "train_cold"),
            ("`modelc train`, the same spec again, whole process", "train_warm")]
    lines = [f"## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC — start-up, target cpu", "",
             f"Command: `{command.strip()}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"{platform.system()} {platform.release()}; load average before: {_load()}  ",
             f"Median of {runs} runs (range in brackets); floor `python -c \"import numpy, numba\"`: "
             f"{med['floor']:.2f} s ({spread['floor']}), measured in the same runs.", "",
             "| what | seconds | range | minus the floor |", "|---|---|---|---|"]
    for title, key in rows:
        in_process = key in ("recompile", "evaluate", "predict")
        lines.append(f"| {title} | {med[key]:.2f} | {spread[key]} | "
                     f"{'(in process)' if in_process else format(med[key] - med['floor'], '.2f')} |")
    lines += ["", f"First run on this machine (empty cache folder, the kernels compile): "
              f"{out['machine'][0]:.2f} s to the first training step."]
    return "\n".join(lines)


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write", metavar="FILE", help="append the results as a Markdown section")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, float(os.environ["STARTUP_T0"]))))
        return 0
    out = measure(args.runs)
    print(json.dumps(out), file=sys.stderr)
    text = report(out, args.runs)
    print(text)
    if args.write:
        append_report(args.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
