"""The cuda target's kernels, run by Numba's CUDA simulator against the numpy target.

The simulator replaces numba.cuda when numba is first imported with
NUMBA_ENABLE_CUDASIM=1, so it runs in child processes only: it must never leak
into this process, where tests/test_cuda_ptx.py compiles real PTX.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install 'modelc[cuda]')")


def _simulator_env(tmp_path) -> dict:
    env = dict(os.environ)
    env["NUMBA_ENABLE_CUDASIM"] = "1"
    env["MODELC_CACHE_DIR"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _run(args, tmp_path, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=_simulator_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def test_simulator_stays_out_of_this_process():
    from numba.core import config
    assert not config.ENABLE_CUDASIM, "NUMBA_ENABLE_CUDASIM is set for the test process itself"


def test_every_lowering_and_a_few_training_steps_match_numpy(tmp_path):
    """tests/cuda_sim_check.py: every case of tests/cuda_cases.py and eight spec runs."""
    proc = _run([str(ROOT / "tests" / "cuda_sim_check.py")], tmp_path)
    lines = proc.stdout.splitlines()
    failed = [line for line in lines if line.startswith("FAIL")]
    passed = [line for line in lines if line.startswith("ok ")]
    report = "\n".join(failed) + "\n--- output ---\n" + proc.stdout[-6000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, "simulator checks failed:\n" + report
    assert not failed, report
    # Every primitive case plus the specs ran (a check that silently vanished would fail here).
    from tests import cuda_cases
    assert len(passed) >= len(cuda_cases.CASES) + 8, report


def test_modelc_verify_blobs_under_the_simulator(tmp_path):
    """The issue's acceptance command, through the CLI."""
    proc = _run(["-m", "modelc", "verify", "specs/blobs.model", "--targets", "numpy,cuda",
                 "--steps", "3", "--batch", "8"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "cuda" in proc.stdout
