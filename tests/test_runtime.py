"""The runtime on the numpy target: fit/evaluate/predict, determinism, checkpoints,
data binding errors, the train section and expectations, progress and history."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

import modelc
from modelc.callbacks import Callback
from modelc.errors import ModelcError, SpecError
from modelc.runtime import checkpoint, fitting, training
from modelc.runtime.progress import History, Progress, format_epoch, write_history

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
model tiny
input  x: f32[4]
target label: int[] classes 3
network {
    x -> dense(16, relu) -> dense(3, softmax) => probs
}
loss      sparse_categorical_crossentropy(label, probs)
optimizer adam(lr=0.01)
metrics   accuracy
train {
    batch  16
    epochs 3
    seed   0
}
"""

ONEHOT_SPEC = SPEC.replace("model tiny", "model tiny_onehot").replace(
    "int[] classes 3", "f32[3] onehot").replace("sparse_categorical_crossentropy", "categorical_crossentropy")

OTHER_SPEC = SPEC.replace("model tiny", "model wider").replace("dense(16, relu)", "dense(32, relu)")


def make_data(n=240, seed=0):
    """Three classes from a fixed linear rule on 4 Gaussian features."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    w = np.array([[2.0, -1.0, 0.0], [0.0, 2.0, -1.0], [-1.0, 0.0, 2.0], [0.5, 0.5, 0.5]])
    y = np.argmax(x @ w, axis=1).astype(np.int64)
    return x, y


def compile_tiny(text=SPEC, seed=None):
    return modelc.compile(text, target="numpy", seed=seed)


# ---------------------------------------------------------------- fit / evaluate / predict

def test_fit_learns_and_history_has_keras_shape():
    x, y = make_data()
    model = compile_tiny()
    history = model.fit(x, y, epochs=6, batch_size=16, validation_data=make_data(60, seed=1), verbose=0)
    h = history.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    assert all(len(v) == 6 for v in h.values())
    assert [e["epoch"] for e in history.epochs] == [1, 2, 3, 4, 5, 6]
    assert h["loss"][-1] < 0.6 * h["loss"][0]
    assert h["accuracy"][-1] > 0.85 and h["val_accuracy"][-1] > 0.8
    results = model.evaluate(*make_data(60, seed=1), return_dict=True)
    assert set(results) == {"loss", "accuracy"}
    assert results["loss"] == pytest.approx(h["val_loss"][-1], rel=1e-6)
    probs = model.predict(x[:7])
    assert probs.shape == (7, 3) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_epoch_results_are_sample_weighted_means_of_the_backend_sums():
    # 50 samples in batches of 16: the last batch has 2; the epoch loss is the per-sample mean
    x, y = make_data(50)
    model = compile_tiny()
    before = model.evaluate(x, y, batch_size=50, return_dict=True)
    seen = []
    original = model.backend.train

    def spy(data, order, batch_size, first, last, step, lr_scale=1.0):
        sums = original(data, order, batch_size, first, last, step, lr_scale)
        seen.append((order.copy(), batch_size, first, last, step, sums.copy()))
        return sums

    model.backend.train = spy
    history = model.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    # Each epoch's calls cover its 4 batches in order, and the update count goes on across epochs.
    epochs = [[c for c in seen if c[4] < 4], [c for c in seen if c[4] >= 4]]
    for calls, start in zip(epochs, (0, 4)):
        assert calls[0][2] == 0 and calls[-1][3] == 4
        assert all(a[3] == b[2] for a, b in zip(calls, calls[1:]))
        assert [c[4] for c in calls] == [start + c[2] for c in calls]
    assert model.step == 8
    assert history.history["loss"][0] == pytest.approx(sum(c[5][0] for c in epochs[0]) / 50)
    assert before["loss"] > history.history["loss"][-1]


def test_shuffle_orders_are_new_each_epoch_and_seeded():
    x, y = make_data(64)

    def orders(seed):
        model = compile_tiny(seed=seed)
        got = []
        original = model.backend.train
        model.backend.train = lambda d, order, b, first, *rest: (
            first == 0 and got.append(order.copy()), original(d, order, b, first, *rest))[1]
        model.fit(x, y, epochs=3, verbose=0)
        return got

    a, b, c = orders(0), orders(0), orders(1)
    assert all(sorted(o.tolist()) == list(range(64)) for o in a)        # permutations of the samples
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_same_seed_same_weights_bit_for_bit(target):
    x, y = make_data()
    runs = []
    for _ in range(2):
        model = modelc.compile(SPEC, target=target, seed=7)
        model.fit(x, y, epochs=2, verbose=0)
        runs.append(model.named_weights())
    other = modelc.compile(SPEC, target=target, seed=8)
    other.fit(x, y, epochs=2, verbose=0)
    for name in runs[0]:
        assert np.array_equal(runs[0][name], runs[1][name]), name
    assert not np.array_equal(runs[0]["dense.kernel"], other.named_weights()["dense.kernel"])


def test_initial_weights_follow_the_seed_and_the_initializers():
    model = compile_tiny(seed=3)
    weights = model.named_weights()
    assert list(weights) == ["dense.kernel", "dense.bias", "probs.kernel", "probs.bias"]
    assert not weights["dense.bias"].any()                         # zeros
    limit = np.sqrt(6 / (4 + 16))                                  # glorot_uniform
    assert np.abs(weights["dense.kernel"]).max() <= limit
    from modelc.compiler.catalog import initialize
    rng = np.random.default_rng(3)
    assert np.array_equal(weights["dense.kernel"], initialize("glorot_uniform", rng, (4, 16), 4, 16))


def test_validation_split_takes_the_last_part_before_shuffling():
    x, y = make_data(100)
    model = compile_tiny()
    orders = []
    original = model.backend.train
    model.backend.train = lambda d, order, *rest: (orders.append(order.copy()), original(d, order, *rest))[1]
    history = model.fit(x, y, epochs=2, validation_split=0.2, verbose=0)
    assert all(sorted(o.tolist()) == list(range(80)) for o in orders)   # trains on the first 80 only
    assert history.history["val_loss"][-1] == pytest.approx(model.evaluate(x[80:], y[80:])[0], rel=1e-6)
    with pytest.raises(ModelcError, match="validation_split"):
        model.fit(x, y, validation_split=1.5, verbose=0)


def test_chunked_epochs_with_a_live_bar_give_the_same_numbers(monkeypatch):
    """A live bar trains in chunks; step numbering (Adam's bias correction) must carry across them."""
    x, y = make_data(200)
    plain = compile_tiny()
    h1 = plain.fit(x, y, epochs=2, batch_size=8, verbose=0)

    class LiveProgress(Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, out=io.StringIO(), err=io.StringIO(), **kwargs)
            self.live = True

    calls = []
    monkeypatch.setattr(fitting, "Progress", LiveProgress)
    monkeypatch.setattr(fitting, "CHUNK_SECONDS", 0.0)       # force small chunks
    chunked = compile_tiny()
    original = chunked.backend.train
    chunked.backend.train = lambda *a: (calls.append(a[3:6]), original(*a))[1]
    h2 = chunked.fit(x, y, epochs=2, batch_size=8, verbose=1)
    assert len(calls) > 4
    assert chunked.step == plain.step == 50
    for name, value in plain.named_weights().items():
        assert np.array_equal(value, chunked.named_weights()[name]), name
    assert h1.history["loss"] == pytest.approx(h2.history["loss"], rel=1e-12)


def test_fit_prints_a_keras_line_per_epoch(capsys):
    x, y = make_data(64)
    compile_tiny().fit(x, y, epochs=2, verbose=2)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith("Epoch 1/2  4/4  ") and "loss: " in out[0] and "accuracy: " in out[0]
    assert out[1].endswith("samples/s")
    compile_tiny().fit(x, y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""


def test_format_epoch():
    line = format_epoch(3, 10, 1875, 0.21, {"loss": 0.0912, "accuracy": 0.9731, "val_loss": 0.1,
                                            "val_accuracy": 0.97}, 285714.3)
    assert line == ("Epoch  3/10  1875/1875  0.21s  loss: 0.0912  accuracy: 0.9731  val_loss: 0.1000  "
                    "val_accuracy: 0.9700  285,714 samples/s")


def test_history_json(tmp_path):
    history = History([{"epoch": 1, "loss": 0.5, "accuracy": 0.8, "seconds": 0.1},
                       {"epoch": 2, "loss": 0.25, "accuracy": 0.9, "seconds": 0.1}])
    path = tmp_path / "h.json"
    write_history(path, history, model="tiny")
    data = json.loads(path.read_text())
    assert data["epochs"][1] == {"epoch": 2, "loss": 0.25, "accuracy": 0.9, "seconds": 0.1}
    assert data["model"] == "tiny"
    assert history.history["loss"] == [0.5, 0.25]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- weights and checkpoints

def test_set_weights_checks_names_and_shapes():
    model = compile_tiny()
    weights = model.named_weights()
    weights["dense.kernel"] = np.ones((4, 16))
    model.set_weights(weights)
    assert np.array_equal(model.named_weights()["dense.kernel"], np.ones((4, 16), np.float32))
    with pytest.raises(ModelcError, match=r"'dense.kernel' has shape \(4, 16\), but the array given has shape \(16, 4\)"):
        model.set_weights(dict(weights, **{"dense.kernel": np.ones((16, 4))}))
    with pytest.raises(ModelcError, match="did you mean 'dense.kernel'"):
        model.set_weights(dict(weights, **{"dense.kernal": np.ones((4, 16))}))
    with pytest.raises(ModelcError, match="missing"):
        model.set_weights({"dense.kernel": np.ones((4, 16))})
    with pytest.raises(ModelcError, match="non-finite"):
        model.set_weights(dict(weights, **{"probs.bias": np.array([0, np.nan, 0])}))
    model.set_weights(list(weights.values()))                      # Keras's list form, in order


def test_save_and_load_round_trip(tmp_path):
    x, y = make_data()
    model = compile_tiny()
    model.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "tiny.npz"
    model.save(path)
    loaded = modelc.load(SPEC, weights=path, target="numpy")
    assert loaded.step == model.step == 30
    for name, value in model.named_weights().items():
        assert np.array_equal(value, loaded.named_weights()[name])
    assert np.array_equal(model.predict(x), loaded.predict(x))
    # the optimizer state and step came along: training on continues identically
    model.fit(x, y, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, epochs=1, shuffle=False, verbose=0)
    for name, value in model.named_weights().items():
        assert np.array_equal(value, loaded.named_weights()[name]), name
    # plain arrays and JSON metadata, no pickles
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz[checkpoint.META_KEY]))
        assert set(npz.files) >= {"param/dense.kernel", "state/dense.kernel.m", "state/dense.kernel.v"}
    assert meta["model"] == "tiny" and meta["step"] == 30 and meta["version"] == checkpoint.VERSION
    assert meta["spec_hash"] == model.program.spec_hash and meta["target"] == "numpy"


def test_loading_weights_of_another_spec_names_both(tmp_path):
    path = tmp_path / "wider.npz"
    compile_tiny(OTHER_SPEC).save(path)
    model = compile_tiny()
    with pytest.raises(ModelcError) as info:
        model.load_weights(path)
    text = str(info.value)
    assert "'wider'" in text and "'tiny'" in text
    assert model.program.spec_hash in text and compile_tiny(OTHER_SPEC).program.spec_hash in text


def test_a_comment_in_the_spec_keeps_its_checkpoints(tmp_path):
    path = tmp_path / "tiny.npz"
    model = compile_tiny()
    model.fit(*make_data(), epochs=1, verbose=0)
    model.save(path)
    edited = compile_tiny("# a note added later\n\n" + SPEC.replace("metrics   accuracy", "metrics   accuracy  # kept"))
    assert edited.program.spec_hash == model.program.spec_hash
    edited.load_weights(path)
    assert np.array_equal(edited.named_weights()["dense.kernel"], model.named_weights()["dense.kernel"])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "plain_npz", "npy", "version"])
def test_damaged_checkpoints_are_clear_errors(tmp_path, damage):
    good = tmp_path / "good.npz"
    compile_tiny().save(good)
    bad = tmp_path / "bad.npz"
    data = good.read_bytes()
    if damage == "truncate":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(b"not a checkpoint at all" * 10)
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "plain_npz":
        np.savez(bad, w=np.ones(3))
    elif damage == "npy":
        with open(bad, "wb") as f:
            np.save(f, np.ones(3))
    elif damage == "version":
        params = {"dense.kernel": np.ones((4, 16), np.float32)}
        checkpoint.save(bad, params, {}, {"spec_hash": "x"})
        with np.load(bad) as npz:
            arrays = dict(npz)
        meta = json.loads(str(arrays[checkpoint.META_KEY]))
        arrays[checkpoint.META_KEY] = np.array(json.dumps(dict(meta, version=99)))
        with open(bad, "wb") as f:
            np.savez(f, **arrays)
    with pytest.raises(ModelcError) as info:
        compile_tiny().load_weights(bad)
    assert "bad.npz" in str(info.value)
    if damage == "version":
        assert "version 99" in str(info.value)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(ModelcError, match="not found"):
        compile_tiny().load_weights(tmp_path / "nope.npz")


def test_weights_survive_a_change_of_optimizer(tmp_path):
    path = tmp_path / "w.npz"
    model = compile_tiny()
    model.fit(*make_data(), epochs=1, verbose=0)
    model.save(path)
    sgd = compile_tiny(SPEC.replace("adam(lr=0.01)", "sgd(lr=0.1, momentum=0.9)"))
    sgd.load_weights(path)                   # same architecture: weights load, optimizer restarts
    assert sgd.step == 0
    assert np.array_equal(sgd.named_weights()["dense.kernel"], model.named_weights()["dense.kernel"])


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "w.npz"
    path.write_bytes(b"old")

    def explode(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_write(path, explode)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]


# ---------------------------------------------------------------- binding data to the declared shapes

def test_one_hot_labels_for_a_sparse_target():
    x, y = make_data(32)
    with pytest.raises(ModelcError) as info:
        compile_tiny().fit(x, np.eye(3)[y], verbose=0)
    text = str(info.value)
    assert "(32, 3)" in text and "one-hot" in text and "int[] classes 3" in text
    assert "y.argmax(axis=1)" in text and "categorical_crossentropy" in text


def test_integer_labels_for_a_one_hot_target():
    x, y = make_data(32)
    with pytest.raises(ModelcError) as info:
        compile_tiny(ONEHOT_SPEC).fit(x, y, verbose=0)
    text = str(info.value)
    assert "integer class labels" in text and "onehot" in text
    assert "target label: int[] classes 3" in text and "one_hot" in text
    compile_tiny(ONEHOT_SPEC).fit(x, np.eye(3, dtype=np.float32)[y], epochs=1, verbose=0)   # the fix works


def test_labels_out_of_range():
    x, y = make_data(32)
    y[5] = 3
    with pytest.raises(ModelcError, match=r"label 3 at index 5 is out of range \[0, 3\)"):
        compile_tiny().fit(x, y, verbose=0)


def test_feature_shape_names_both_shapes():
    x, y = make_data(32)
    with pytest.raises(ModelcError) as info:
        compile_tiny().fit(x[:, :3], y, verbose=0)
    text = str(info.value)
    assert "f32[4]" in text and "(32, 3)" in text
    with pytest.raises(ModelcError, match="reshape"):
        compile_tiny().predict(x.reshape(32, 2, 2))
    with pytest.raises(ModelcError, match=r"x\[None\]"):
        compile_tiny().predict(x[0])


def test_nan_empty_and_mismatched_data():
    x, y = make_data(32)
    x[3, 2] = np.nan
    with pytest.raises(ModelcError, match="not a finite number"):
        compile_tiny().fit(x, y, verbose=0)
    with pytest.raises(ModelcError, match="no samples"):
        compile_tiny().fit(np.zeros((0, 4)), np.zeros(0, np.int64), verbose=0)
    with pytest.raises(ModelcError, match="32 samples of features"):
        compile_tiny().fit(make_data(32)[0], y[:10], verbose=0)
    with pytest.raises(ModelcError, match="numbers"):
        compile_tiny().fit(np.array([["a"] * 4] * 2), [0, 1], verbose=0)


def test_bad_fit_arguments():
    x, y = make_data(32)
    with pytest.raises(ModelcError, match="epochs"):
        compile_tiny().fit(x, y, epochs=0, verbose=0)
    with pytest.raises(ModelcError, match="batch_size"):
        compile_tiny().fit(x, y, batch_size=-2, verbose=0)
    with pytest.raises(ModelcError, match="seed"):
        compile_tiny(seed=-1)


def test_callbacks_and_warm_up():
    x, y = make_data(64)
    model = compile_tiny()
    before = model.named_weights()
    assert model.warm_up() >= 0
    assert model.step == 0
    for name, value in before.items():
        assert np.array_equal(value, model.named_weights()[name])      # warming up changes nothing
    seen = []

    class Recorder(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, sorted(logs)))

    model.fit(x, y, epochs=2, verbose=0, callbacks=[Recorder()])
    assert seen == [(0, ["accuracy", "loss"]), (1, ["accuracy", "loss"])]      # Keras's 0-based epochs and logs
    with pytest.raises(ModelcError, match="Callback"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[lambda epoch, logs: None])


def test_unknown_target():
    with pytest.raises(ModelcError, match="unknown target 'gpu'"):
        modelc.compile(SPEC, target="gpu")


# ---------------------------------------------------------------- the spec's train section and expectations

SPEC_WITH_DATA = """\
model blobs_small
input  p: f32[2]
target k: int[] classes 3
network {
    p -> dense(16, relu) -> dense(3, softmax) => probs
}
loss      sparse_categorical_crossentropy(k, probs)
optimizer adam(lr=0.01)
metrics   accuracy
train {
    data     blobs(samples=300, seed=1)
    batch    16
    epochs   4
    seed     0
    validate split(0.2)
}
expect {
    test.accuracy >= 0.9
    val.loss <= 5
    train.accuracy > 0.5
    test.loss < 0.0001
}
"""


def test_train_from_spec_and_expectations():
    model = compile_tiny(SPEC_WITH_DATA)
    result = model.train_from_spec(verbose=0, quiet_data=True)
    assert len(result.history.epochs) == 4
    assert set(result.test) == {"loss", "accuracy"} and result.test_samples == 60
    assert result.val == {"loss": result.history.epochs[-1]["val_loss"],
                          "accuracy": result.history.epochs[-1]["val_accuracy"]}
    outcomes = model.check_expectations(result)
    assert [o.passed for o in outcomes] == [True, True, True, False]
    assert str(outcomes[0]) == f"<spec>:18: test.accuracy >= 0.9 ok: {result.test['accuracy']:.4f}"
    assert str(outcomes[3]) == f"<spec>:21: test.loss < 0.0001 failed: {result.test['loss']:.4f}"
    # overrides; a seed before any training re-draws the weights
    again = compile_tiny(SPEC_WITH_DATA)
    again.train_from_spec(verbose=0, quiet_data=True, epochs=1, batch_size=32, seed=5)
    assert again.step == 6 and again.seed == 5        # 300 - 60 test - 48 validation = 192 = 6 x 32


def test_train_from_spec_blames_the_data_line_for_data_that_does_not_fit():
    text = SPEC_WITH_DATA.replace("p: f32[2]", "p: f32[3]")
    with pytest.raises(SpecError) as info:
        compile_tiny(text).train_from_spec(verbose=0, quiet_data=True)
    assert info.value.line == 11 and "f32[3]" in str(info.value) and "shape [2]" in str(info.value)


def test_expectations_are_checked_before_training():
    spec = modelc.read_spec(SPEC_WITH_DATA.replace("test.accuracy", "test.acuracy"))[0]
    settings = training.settings(spec)
    with pytest.raises(SpecError) as info:
        training.check_expectations_static(spec, ["loss", "accuracy"], settings)
    assert info.value.line == 18 and "did you mean 'accuracy'" in str(info.value)
    spec = modelc.read_spec(SPEC_WITH_DATA.replace("test.accuracy", "tset.accuracy"))[0]
    with pytest.raises(SpecError, match="did you mean 'test'"):
        training.check_expectations_static(spec, ["loss", "accuracy"], training.settings(spec))
    spec = modelc.read_spec(SPEC_WITH_DATA.replace("validate split(0.2)", "validate none"))[0]
    with pytest.raises(SpecError, match="needs validation"):
        training.check_expectations_static(spec, ["loss", "accuracy"], training.settings(spec))


@pytest.mark.parametrize("old, new, line, message", [
    ("epochs   4", "epoch 3", 13, "did you mean 'epochs'"),
    ("batch    16", "batch 0", 12, "'batch' must be"),
    ("batch    16", "batch 2.5", 12, "'batch' must be"),
    ("seed     0", "seed -1", 14, "'seed' must be"),
    ("seed     0", "shuffle 1", 14, "true or false"),
    ("validate split(0.2)", "validate split(1.5)", 15, "between 0 and 1"),
    ("validate split(0.2)", "validate tset", 15, "did you mean 'test'"),
    ("data     blobs(samples=300, seed=1)", "data blobz(samples=10)", 11, "did you mean 'blobs'"),
    ("data     blobs(samples=300, seed=1)", "data blobs(sample=10)", 11, "did you mean 'samples'"),
    ("seed     0", "epochs 2", 14, "set twice (first at line 13)"),
])
def test_train_section_mistakes_are_located(old, new, line, message):
    text = SPEC_WITH_DATA.replace(old, new)
    assert text != SPEC_WITH_DATA
    spec = modelc.read_spec(text)[0]
    with pytest.raises(SpecError) as info:
        training.settings(spec)
    assert info.value.line == line, str(info.value)
    assert message in str(info.value)


def test_train_settings_values():
    spec = modelc.read_spec(SPEC_WITH_DATA.replace("validate split(0.2)", "validate 0.25\n    shuffle false"))[0]
    settings = training.settings(spec)
    assert (settings.batch, settings.epochs, settings.seed, settings.shuffle) == (16, 4, 0, False)
    assert settings.validate == 0.25 and settings.data.name == "blobs"
    assert training.settings(modelc.read_spec(SPEC)[0]).data is None


def test_a_spec_without_data_cannot_train_from_spec():
    with pytest.raises(SpecError, match="names no data source"):
        compile_tiny().train_from_spec(verbose=0)


def test_summary_of_the_mnist_spec():
    model = modelc.compile(ROOT / "specs" / "mnist.model", target="numpy")
    lines = []
    model.summary(print_fn=lines.append)
    text = lines[0]
    assert "Total params: 55,050" in text and "Trainable params: 55,050" in text
    assert "dense (Dense)" in text and "(None, 64)" in text and "50,240" in text
    assert model.count_params() == 55050


def test_import_modelc_does_not_import_numba():
    import subprocess
    import sys
    code = "import sys, modelc; print('numba' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True).stdout.split()
    assert out == ["False", "False"]


def test_weights_move_between_targets(tmp_path):
    """Checkpoints hold host arrays: written on numpy, read on cpu, the same predictions."""
    pytest.importorskip("numba")
    x, y = make_data(48)
    model = compile_tiny()
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "w.npz"
    model.save(path)
    on_cpu = modelc.load(SPEC, weights=path, target="cpu")
    assert on_cpu.step == model.step
    np.testing.assert_allclose(on_cpu.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)


def test_summary_of_a_graph_shows_what_each_layer_reads():
    from modelc.compiler.build import build_program
    from modelc.grammar.parser import parse_file
    from modelc.runtime.summary import summarize
    graph = summarize(build_program(parse_file(str(ROOT / "specs" / "functional.model"))))
    assert "Connected to" in graph and "x (InputLayer)" in graph
    joined = next(line for line in graph.splitlines() if line.strip().startswith("joined"))
    assert joined.rstrip().endswith("hidden1, hidden2")
    chain = summarize(build_program(parse_file(str(ROOT / "specs" / "mnist.model"))))
    assert "Connected to" not in chain and "55,050" in chain


BINARY_METRICS = """
model binary_metrics
input x: f32[3]
target y: f32[2]
network {
    x -> dense(8, tanh) -> dense(2, sigmoid) => p
}
loss bce(y, p)
optimizer adagrad(lr=0.05, clipvalue=0.5)
metrics precision, recall(threshold=0.4), binary_accuracy
"""


@pytest.mark.parametrize("target", ["numpy", "cpu"])
def test_precision_and_recall_are_ratios_over_the_whole_data(target):
    """Keras's stateful precision/recall: true positives over all predicted (or actual)
    positives of the data, not a mean of per-batch ratios; checked against predict."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(37, 3)).astype(np.float32)
    y = (rng.random((37, 2)) > 0.4).astype(np.float32)
    model = modelc.compile(BINARY_METRICS, target=target, seed=1)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    got = model.evaluate(x, y, batch_size=5, return_dict=True)
    p = model.predict(x)
    tp = ((p > 0.5) & (y != 0)).sum()
    assert got["precision"] == pytest.approx(tp / (p > 0.5).sum(), rel=1e-6)
    assert got["recall"] == pytest.approx(((p > 0.4) & (y != 0)).sum() / (y != 0).sum(), rel=1e-6)
    assert got["binary_accuracy"] == pytest.approx(((p > 0.5) == (y != 0)).mean(), rel=1e-6)


def test_adagrad_starts_from_its_initial_accumulator():
    model = modelc.compile(BINARY_METRICS.replace("adagrad(lr=0.05, clipvalue=0.5)",
                                                  "adagrad(initial_accumulator_value=0.3)"), target="numpy")
    state = model.backend.read_state()[1]
    assert state and all(np.all(v == np.float32(0.3)) for v in state.values())
