"""The cuda target on a real GPU: every simulator check again, with the GPU's launch
configuration (`tests/cuda_sim_check.py --device`), and the MNIST spec trained against the cpu
target. Skipped without a device (the simulator tests in tests/test_cuda_sim.py run instead)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install 'modelc[cuda]')")
from modelc.compiler.codegen.cuda_env import cuda_available, simulator_enabled  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HAVE_GPU, WHY = cuda_available() if not simulator_enabled() else (False, "the simulator is on")
pytestmark = pytest.mark.skipif(not HAVE_GPU, reason=f"no GPU: {WHY}")


def test_every_simulator_check_passes_on_the_device(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["MODELC_CACHE_DIR"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "cuda_sim_check.py"), "--device"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


def test_mnist_on_the_device_learns_as_the_cpu_target_does():
    import modelc
    accuracy = {}
    for target in ("cuda", "cpu"):
        model = modelc.compile(str(ROOT / "specs" / "mnist.model"), target=target, seed=0)
        (x, y), (xt, yt) = model.load_data(quiet=True)
        model.fit(x, y, epochs=1, batch_size=32, verbose=0)
        accuracy[target] = model.evaluate(xt, yt, return_dict=True)["accuracy"]
    assert abs(accuracy["cuda"] - accuracy["cpu"]) < 0.01, accuracy
