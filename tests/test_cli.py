"""The `modelc` command, run as `python -m modelc` in a subprocess, as a user runs it."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.model"))
MNIST = ROOT / "specs" / "mnist.model"

TINY = """\
model tiny_blobs
input  point: f32[2]
target blob: int[] classes 3
network {
    point -> dense(16, relu) -> dense(3, softmax) => probs
}
loss      sparse_categorical_crossentropy(blob, probs)
optimizer adam(lr=0.01)
metrics   accuracy
train {
    data     blobs(samples=300, std=3.0, seed=1)
    batch    16
    epochs   3
    seed     0
    validate test
}
expect {
    test.accuracy >= 0.8
}
"""


def run(*args, timeout=120, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "modelc", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout, **kwargs)


def assert_user_error(result, *words):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in result.stderr, (word, result.stderr)


# ---------------------------------------------------------------- check / summary / ir

def test_check_every_spec():
    result = run("check", *[p.relative_to(ROOT) for p in SPECS])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(SPECS)
    assert "ok: specs/mnist.model (mnist, 55,050 parameters)" in lines


def test_summary_mnist():
    result = run("summary", "specs/mnist.model")
    assert result.returncode == 0
    assert "Total params: 55,050" in result.stdout
    assert re.search(r"dense \(Dense\)\s+\(None, 64\)\s+50,240", result.stdout)


def test_ir_graphs():
    train = run("ir", "specs/mnist.model", "--train")
    assert train.returncode == 0
    assert train.stdout.count("adam_update(") == 6
    assert "! writes %dense.kernel, %dense.kernel.m, %dense.kernel.v" in train.stdout
    predict = run("ir", "specs/mnist.model")
    assert "graph predict(" in predict.stdout and "adam_update" not in predict.stdout
    evaluate = run("ir", "specs/mnist.model", "--eval")
    assert "graph evaluate(" in evaluate.stdout and "categorical_hit" in evaluate.stdout


# ---------------------------------------------------------------- broken copies of mnist.model

def _broken(tmp_path, name, edit):
    text = MNIST.read_text()
    broken = edit(text)
    assert broken != text
    path = tmp_path / name
    path.write_text(broken)
    return path


BROKEN = [
    ("typo_activation", lambda t: t.replace("dense(64, relu)\n", "dense(64, rleu)\n"), 10,
     "did you mean 'relu'?"),
    ("wrong_loss", lambda t: t.replace("sparse_categorical_crossentropy", "categorical_crossentropy"), 14,
     "use sparse_categorical_crossentropy"),
    ("cut_short", lambda t: t[:t.index("-> dense(64, relu)\n") + 12], 10, "end of file"),
    ("stray_character", lambda t: t.replace("optimizer adam(lr=0.001)", "optimizer adam(lr=0.001) @"), 15,
     "unexpected character '@'"),
    ("negative_size", lambda t: t.replace("dense(64, relu, init=he_normal)", "dense(-64, relu, init=he_normal)"),
     9, "'units' must be a whole number >= 1"),
    ("typo_loss", lambda t: t.replace("loss      sparse_", "loss      spares_"), 14, "did you mean"),
    ("typo_setting", lambda t: t.replace("epochs   10", "epoch    10"), 21, "did you mean 'epochs'?"),
    ("typo_data_source", lambda t: t.replace("mnist(scale=1/255)", "mnsit(scale=1/255)"), 19,
     "did you mean 'mnist'?"),
    ("typo_expectation", lambda t: t.replace("test.accuracy", "test.acuracy"), 27, "did you mean 'accuracy'?"),
    ("softmax_with_logits", lambda t: t.replace("(digit, probs)", "(digit, probs, from_logits=true)"), 14,
     "from_logits"),
]


@pytest.mark.parametrize("name, edit, line, words", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_specs_are_located_errors(tmp_path, name, edit, line, words):
    path = _broken(tmp_path, f"{name}.model", edit)
    result = run("check", path)
    assert_user_error(result, words)
    assert re.search(rf"^{re.escape(str(path))}:{line}:\d+: error: ", result.stderr, re.M), result.stderr
    assert "^" in result.stderr                                     # the caret under the spot


def test_train_reports_spec_errors_the_same_way(tmp_path):
    path = _broken(tmp_path, "typo.model", BROKEN[0][1])
    assert_user_error(run("train", path, "--target", "numpy"), f"{path}:10:")


def test_check_goes_on_after_a_broken_spec(tmp_path):
    path = _broken(tmp_path, "typo.model", BROKEN[0][1])
    result = run("check", path, "specs/blobs.model")
    assert_user_error(result)
    assert "ok: specs/blobs.model" in result.stdout


# ---------------------------------------------------------------- train / eval / predict

def test_train_then_eval_then_predict(tmp_path):
    spec = tmp_path / "tiny.model"
    spec.write_text(TINY)
    weights, history = tmp_path / "w.npz", tmp_path / "h.json"
    result = run("train", spec, "--target", "numpy", "--history", history, "--out", weights, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Epoch" not in result.stdout + result.stderr                   # quiet
    test_accuracy = re.search(r"^test\.accuracy: (\S+)$", result.stdout, re.M).group(1)
    assert re.search(rf"^{re.escape(str(spec))}:18: test.accuracy >= 0.8 ok: ", result.stdout, re.M)
    data = json.loads(history.read_text())
    assert [e["epoch"] for e in data["epochs"]] == [1, 2, 3]
    assert set(data["epochs"][0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    assert f"{data['epochs'][-1]['val_accuracy']:.4f}" == test_accuracy

    evaluation = run("eval", spec, "--weights", weights, "--target", "numpy")
    assert evaluation.returncode == 0, evaluation.stderr
    assert f"accuracy: {test_accuracy}" in evaluation.stdout.splitlines()
    assert re.search(r"^loss: \d+\.\d{4}$", evaluation.stdout, re.M)

    x = np.array([[0.0, 0.0], [5.0, -3.0], [-8.0, 2.0]], np.float32)
    np.save(tmp_path / "x.npy", x)
    shown = run("predict", spec, "--weights", weights, "--input", tmp_path / "x.npy", "--target", "numpy")
    assert shown.returncode == 0, shown.stderr
    assert "samples: 3" in shown.stdout and re.search(r"^class: +\d \d \d$", shown.stdout, re.M)
    out = tmp_path / "p.npy"
    saved = run("predict", spec, "--weights", weights, "--input", tmp_path / "x.npy", "--output", out,
                "--target", "numpy")
    assert saved.returncode == 0, saved.stderr
    probs = np.load(out)
    assert probs.shape == (3, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_flags_override_the_spec_and_progress_lines(tmp_path):
    spec = tmp_path / "tiny.model"
    spec.write_text(TINY)
    history = tmp_path / "h.json"
    result = run("train", spec, "--target", "numpy", "--epochs", "2", "--batch", "64", "--seed", "3",
                 "--history", history)
    assert result.returncode == 0, result.stderr
    epochs = [line for line in result.stdout.splitlines() if line.startswith("Epoch")]
    assert len(epochs) == 2 and epochs[0].startswith("Epoch 1/2  4/4  ")   # 240 samples / 64
    assert "val_accuracy: " in epochs[0] and epochs[0].endswith("samples/s")
    assert len(json.loads(history.read_text())["epochs"]) == 2


def test_failed_expectation_exits_1(tmp_path):
    spec = tmp_path / "hard.model"
    spec.write_text(TINY.replace("test.accuracy >= 0.8", "test.accuracy >= 0.8\n    test.loss <= 0.00001"))
    result = run("train", spec, "--target", "numpy", "--quiet")
    assert result.returncode == 1
    assert re.search(rf"{re.escape(str(spec))}:19: test.loss <= 0.00001 failed: \d\.\d{{4}}", result.stdout)
    assert "1 of 2 expectation(s) failed" in result.stderr


def test_weights_of_another_spec_and_damaged_weights(tmp_path):
    spec = tmp_path / "tiny.model"
    spec.write_text(TINY)
    weights = tmp_path / "w.npz"
    trained = run("train", spec, "--target", "numpy", "--epochs", "1", "--out", weights, "--quiet")
    assert trained.returncode in (0, 1) and weights.exists(), trained.stderr   # 1: an expectation missed
    assert_user_error(run("eval", "specs/blobs.model", "--weights", weights, "--target", "numpy"),
                      "'tiny_blobs'", "'blobs'")
    weights.write_bytes(weights.read_bytes()[:100])
    assert_user_error(run("eval", spec, "--weights", weights, "--target", "numpy"), "damaged")
    assert_user_error(run("eval", spec, "--weights", tmp_path / "missing.npz", "--target", "numpy"), "not found")


def test_user_mistakes_exit_2_without_traceback(tmp_path):
    assert_user_error(run("check", "specs/nope.model"), "not found")
    assert_user_error(run("train", "specs/blobs.model", "--epochs", "0"), "at least 1")
    np.save(tmp_path / "x.npy", np.zeros((2, 5), np.float32))
    spec = tmp_path / "tiny.model"
    spec.write_text(TINY)
    weights = tmp_path / "w.npz"
    trained = run("train", spec, "--target", "numpy", "--epochs", "1", "--out", weights, "--quiet")
    assert trained.returncode in (0, 1) and weights.exists(), trained.stderr   # 1: an expectation missed
    assert_user_error(run("predict", spec, "--weights", weights, "--input", tmp_path / "x.npy",
                          "--target", "numpy"), "(2, 5)")


def test_cuda_without_a_gpu_exits_2():
    try:
        from modelc import doctor  # noqa: F401
        available = doctor.cuda_available()[0]
    except ImportError:
        available = False
    if available:
        pytest.skip("a CUDA GPU is present")
    result = run("train", "specs/blobs.model", "--target", "cuda")
    assert_user_error(result, "doctor")


def test_verify_numpy_against_itself():
    result = run("verify", "specs/blobs.model", "--targets", "numpy,numpy", "--steps", "5", "--batch", "16")
    assert result.returncode == 0, result.stderr
    assert "tolerance: max|a - b| <= 0.0001 * max|numpy| + 1e-07" in result.stdout
    assert re.search(r"^  dense\.kernel\s+0\s+0  ok$", result.stdout, re.M)
    assert re.search(r"^  loss \(mean over steps\)\s+0\s+0  ok$", result.stdout, re.M)
    assert "verify: ok" in result.stdout


def test_verify_fails_above_the_tolerance(tmp_path):
    """Two runs that differ for real (another learning rate) must fail: the check can fail."""
    import modelc.cli as cli
    spec = tmp_path / "tiny.model"
    spec.write_text(TINY)
    # the same target twice, but the second run's Adam is made to take another step size
    # (not the float64 rerun of the reference that a failure brings: it must stay right)
    from modelc.compiler import primitives
    original = primitives.PRIMITIVES["adam_update"].impl
    calls = {"n": 0}

    def skewed(w, g, m, v, step, lr=0.001, **kw):
        calls["n"] += 1
        return original(w, g, m, v, step, lr=lr * (1.5 if 5 * 4 < calls["n"] <= 2 * 5 * 4 else 1.0), **kw)

    primitives.PRIMITIVES["adam_update"].impl = skewed
    try:
        code = cli.main(["verify", str(spec), "--targets", "numpy,numpy", "--steps", "5", "--quiet"])
    finally:
        primitives.PRIMITIVES["adam_update"].impl = original
    assert code == 1


def test_interrupt_exits_130_and_writes_nothing(tmp_path):
    spec = tmp_path / "long.model"
    spec.write_text(TINY.replace("epochs   3", "epochs   100000"))
    weights = tmp_path / "w.npz"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "modelc", "train", str(spec), "--target", "numpy",
                             "--out", str(weights)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("Epoch"), line
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not weights.exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_doctor_and_compile_without_cuda_modules_are_clear():
    for args in (("doctor",), ("compile", "specs/blobs.model", "--target", "cuda", "--emit-ptx", "/tmp/x")):
        result = run(*args)
        if result.returncode == 0:
            continue                                           # the cuda engineer's modules are in
        assert_user_error(result)


def test_python_dash_m_and_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("modelc ")
    assert run().returncode == 2                                # no command: usage, exit 2
