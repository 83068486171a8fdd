"""bench/gpu_check.sh, the check a person with an NVIDIA GPU runs for us: here, where
there is none, it must say so plainly and fail; and its smoke mode must run every
check's code under Numba's CUDA simulator, so that a mistake in the script is found
here and not in someone else's GPU session. The simulator is chosen when numba is
first imported, so both run in child processes (see tests/test_cuda_sim.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install 'modelc[cuda]')")

CHECKS = ["device", "doctor", "kernels", "data", "train cuda", "train cpu", "accuracy cuda vs cpu", "determinism",
          "enqueue", "kernel times", "epoch kernel vs kernel by kernel", "batches", "cnn data", "cnn cuda", "torch eager", "torch cuda graph",
          "memcheck", "summary"]


def _env(tmp_path, simulator: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    env["MODELC_CACHE_DIR"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHON"] = sys.executable
    return env


def _run(args, tmp_path, simulator: bool, timeout: float):
    return subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), *args], cwd=tmp_path,
                          env=_env(tmp_path, simulator), capture_output=True, text=True, timeout=timeout)


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _has_gpu() -> bool:
    probe = "from modelc.compiler.codegen.cuda_env import cuda_available; print(cuda_available()[0])"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    return out.stdout.strip() == "True"


def test_without_a_gpu_it_says_so_and_fails(tmp_path):
    if _has_gpu():
        pytest.skip("a GPU is here: bench/gpu_check.sh runs its real checks")
    out = tmp_path / "check.jsonl"
    start = time.perf_counter()
    proc = _run(["--out", str(out)], tmp_path, simulator=False, timeout=60)
    assert time.perf_counter() - start < 60
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = _lines(proc.stdout)
    assert [(r["check"], r["ok"]) for r in lines] == [("device", False)], proc.stdout
    assert lines[0]["reason"]
    assert _lines(out.read_text()) == lines
    assert "no NVIDIA GPU" in proc.stderr and "--smoke" in proc.stderr


@pytest.mark.slow
def test_smoke_mode_runs_every_check_under_the_simulator(tmp_path):
    """About 80 s on 2 busy cores, most of it the cpu target compiling (the cache is fresh)."""
    out = tmp_path / "smoke.jsonl"
    proc = _run(["--smoke", "--out", str(out)], tmp_path, simulator=True, timeout=300)
    report = proc.stdout[-6000:] + proc.stderr[-4000:]
    lines = _lines(proc.stdout)
    assert [r["check"] for r in lines] == CHECKS, report
    assert [r for r in lines if not r["ok"]] == [], report
    assert proc.returncode == 0, report
    assert _lines(out.read_text()) == lines
    by_name = {r["check"]: r for r in lines}
    assert by_name["determinism"]["verdict"] in ("bit-identical", "tiny")
    assert len(by_name["train cuda"]["seconds_per_epoch"]) == 3
    assert by_name["kernel times"]["kernel_us"], report
    modes = by_name["epoch kernel vs kernel by kernel"]
    assert modes["ok"] and modes["modes"][0] == "epoch kernel" and modes["modes"][1].startswith("kernel by kernel")
    assert all(by_name[c].get("skipped") for c in ("kernels", "torch eager", "torch cuda graph", "memcheck"))
