"""Models in and out on the command line, as a user runs them: `from-keras` on files real Keras 3
wrote, `export` to ONNX (run by onnxruntime against Keras's own predictions), `plot` of a network
and of a history, and `train --plot`."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.test_cli import ROOT, assert_user_error, run

KERAS_MODELS = ROOT / "tests" / "data" / "keras_models"
FUNCTIONAL = ROOT / "specs" / "functional.model"
BLOBS = ROOT / "specs" / "blobs.model"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["mlp", "cnn", "graph"])
def test_keras_file_in_and_onnx_out_equal_keras(tmp_path, name):
    """from-keras, check, predict and export, each a command; modelc and onnxruntime both give
    what Keras's model.predict gave, to 1e-5."""
    pytest.importorskip("h5py")
    ort = pytest.importorskip("onnxruntime")
    spec, weights, onnx_file = tmp_path / f"{name}.model", tmp_path / f"{name}.npz", tmp_path / f"{name}.onnx"
    result = run("from-keras", KERAS_MODELS / f"{name}.keras", "--spec", spec, "--weights", weights)
    assert result.returncode == 0, result.stderr
    assert f"wrote {spec} and {weights}" in result.stdout
    assert run("check", spec).returncode == 0
    stored = np.load(KERAS_MODELS / f"{name}.npz")
    np.save(tmp_path / "x.npy", stored["x"])
    result = run("predict", spec, "--weights", weights, "--input", tmp_path / "x.npy", "--output",
                 tmp_path / "p.npy", "--target", "numpy", "-q")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), stored["y"], rtol=1e-5, atol=1e-5)
    result = run("export", spec, "--weights", weights, "--onnx", onnx_file, "-q")
    assert result.returncode == 0, result.stderr
    assert "passes onnx.checker's full check" in result.stdout and "checked: onnxruntime" in result.stdout
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: stored["x"]})
    np.testing.assert_allclose(got, stored["y"], rtol=1e-5, atol=1e-5)


def test_from_keras_mistakes_are_messages(tmp_path):
    pytest.importorskip("h5py")
    (tmp_path / "not.keras").write_text("hello")
    assert_user_error(run("from-keras", tmp_path / "not.keras", "--spec", tmp_path / "o.model"), "not.keras")
    assert not (tmp_path / "o.model").exists()
    assert_user_error(run("from-keras", tmp_path / "missing.keras", "--spec", tmp_path / "o.model"), "missing.keras")
    keras_file = KERAS_MODELS / "mlp.keras"
    assert_user_error(run("from-keras", keras_file, "--spec", keras_file), "--spec")     # never over its input


def test_export_mistakes_are_messages(tmp_path):
    pytest.importorskip("onnx")
    weights = tmp_path / "w.npz"
    assert run("train", FUNCTIONAL, "--target", "numpy", "--epochs", "1", "--out", weights, "-q").returncode in (0, 1)
    assert_user_error(run("export", FUNCTIONAL, "--weights", weights, "--onnx", tmp_path / "o.onnx",
                          "--opset", "12"), "opset")
    assert_user_error(run("export", FUNCTIONAL, "--weights", weights, "--onnx", weights), "--onnx")
    assert_user_error(run("export", FUNCTIONAL, "--weights", tmp_path / "none.npz", "--onnx", tmp_path / "o.onnx"),
                      "none.npz")
    assert not (tmp_path / "o.onnx").exists()


def test_plot_network_to_dot_and_png(tmp_path):
    result = run("plot", FUNCTIONAL, "-o", tmp_path / "f.dot")
    assert result.returncode == 0, result.stderr
    dot = (tmp_path / "f.dot").read_text()
    for edge in ('"hidden1" -> "joined"', '"hidden2" -> "joined"', '"x" -> "hidden1"'):
        assert edge in dot
    result = run("plot", FUNCTIONAL, "-o", tmp_path / "f.png")
    if shutil.which("dot"):
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "f.png").read_bytes().startswith(PNG)
    else:
        assert_user_error(result, "Graphviz", "apt install graphviz")


def test_train_plot_and_plot_history(tmp_path):
    pytest.importorskip("matplotlib")
    curves, history = tmp_path / "c.png", tmp_path / "h.json"
    result = run("train", BLOBS, "--target", "numpy", "--plot", curves, "--history", history, "-q")
    assert result.returncode == 0, result.stderr
    assert curves.read_bytes().startswith(PNG)
    recorded = json.loads(history.read_text())
    assert len(recorded["epochs"]) == 20 and "test" in recorded
    result = run("plot", history, "-o", tmp_path / "again.svg")
    assert result.returncode == 0, result.stderr
    assert "the curves of 20 epochs" in result.stdout and (tmp_path / "again.svg").read_text().lstrip().startswith("<?xml")


def test_train_plot_mistakes_stop_before_training(tmp_path):
    result = run("train", BLOBS, "--target", "numpy", "--plot", tmp_path / "c.txt")
    assert_user_error(result, "unknown extension '.txt'")
    assert "Epoch" not in result.stdout
    assert_user_error(run("train", BLOBS, "--target", "numpy", "--plot", BLOBS), "--plot")
