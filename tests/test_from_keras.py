"""modelc from-keras: .keras files (written by real Keras, and by tests/keras_fixtures.py
following the format) converted, checked, and predicted against Keras's own numbers or an
independent NumPy computation of each Keras layer; every refusal names what it refuses."""
from __future__ import annotations

import math
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import modelc
from modelc.compiler.layers import ACTIVATION_NAMES
from modelc.errors import ModelcError
from modelc.keras_import import convert
from modelc.keras_import.layer_table import LAYER_TABLE

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras_fixtures as kf  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "keras_models"
RNG = np.random.default_rng(0)


def _predict(tmp_path, path, x, target="numpy"):
    conversion = convert(path)
    conversion.write(tmp_path / "m.model", tmp_path / "m.npz")
    model = modelc.load(str(tmp_path / "m.model"), weights=str(tmp_path / "m.npz"), target=target)
    return conversion, model.predict(x)


def _w(*shape):
    return RNG.normal(size=shape).astype(np.float32)


# ---------------------------------------------------------------- references, from Keras's definitions

def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


KERAS_ACTIVATIONS = {
    "linear": lambda x: x, "relu": lambda x: np.maximum(x, 0), "sigmoid": _sigmoid, "tanh": np.tanh,
    "softmax": _softmax, "log_softmax": lambda x: np.log(_softmax(x)),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x), "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)),
    "gelu": lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))),
    "softplus": lambda x: np.log1p(np.exp(x)), "silu": lambda x: x * _sigmoid(x),
}


def _same_pads(n, k, s):
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _windows(x, k, s, padding, fill):
    """Each output position's window [batch, oh, ow, kh*kw, c] and which entries are padding."""
    b, h, w, c = x.shape
    (t, bo), (l, r) = (_same_pads(h, k[0], s[0]), _same_pads(w, k[1], s[1])) if padding == "same" else ((0, 0), (0, 0))
    xp = np.pad(x, ((0, 0), (t, bo), (l, r), (0, 0)), constant_values=fill)
    real = np.pad(np.ones((h, w)), ((t, bo), (l, r)))
    oh, ow = (xp.shape[1] - k[0]) // s[0] + 1, (xp.shape[2] - k[1]) // s[1] + 1
    win = np.stack([xp[:, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]].reshape(b, -1, c)
                    for i in range(oh) for j in range(ow)], 1).reshape(b, oh, ow, -1, c)
    mask = np.stack([real[i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]].reshape(-1)
                     for i in range(oh) for j in range(ow)]).reshape(oh, ow, -1)
    return win, mask


def _conv(x, kernel, bias, s, padding):
    win, _ = _windows(x, kernel.shape[:2], s, padding, 0.0)
    return np.einsum("bhwkc,kcf->bhwf", win, kernel.reshape(-1, *kernel.shape[2:])) + bias


def _avg_pool(x, k, s, padding):       # Keras's average leaves the padding out
    win, mask = _windows(x, k, s, padding, 0.0)
    return win.sum(3) / mask.sum(-1)[None, :, :, None]


def _normalize(x, mean, var, eps):
    return (x - mean) / np.sqrt(var + eps)


# class -> (sample shape, layer config, its variables, reference(x, variables)); functional when
# the entry's sources are given (the merge layers read the input and a Dense of it)
LAYER_CASES = {
    "Dense": ((5,), {"units": 3, "activation": "tanh", "use_bias": True}, [_w(5, 3), _w(3)],
              lambda x, w: np.tanh(x @ w[0] + w[1])),
    "Dropout": ((4,), {"rate": 0.5, "seed": 3, "noise_shape": None}, [], lambda x, w: x),
    "Flatten": ((3, 2, 2), {"data_format": "channels_last"}, [], lambda x, w: x.reshape(len(x), -1)),
    "Reshape": ((6,), {"target_shape": [3, -1]}, [], lambda x, w: x.reshape(len(x), 3, 2)),
    "Activation": ((4,), {"activation": "selu"}, [], lambda x, w: KERAS_ACTIVATIONS["selu"](x)),
    "ReLU": ((4,), {"max_value": None, "negative_slope": 0.1, "threshold": 0.0}, [],
             lambda x, w: np.where(x > 0, x, 0.1 * x)),
    "LeakyReLU": ((4,), {"negative_slope": 0.3}, [], lambda x, w: np.where(x > 0, x, 0.3 * x)),
    "ELU": ((4,), {"alpha": 0.5}, [], lambda x, w: np.where(x > 0, x, 0.5 * np.expm1(x))),
    "Softmax": ((4,), {"axis": -1}, [], lambda x, w: _softmax(x)),
    "Identity": ((4,), {}, [], lambda x, w: x),
    "Conv2D": ((7, 6, 2), {"filters": 3, "kernel_size": [3, 2], "strides": [2, 2], "padding": "same",
                           "data_format": "channels_last", "dilation_rate": [1, 1], "groups": 1,
                           "activation": "relu", "use_bias": True}, [_w(3, 2, 2, 3), _w(3)],
               lambda x, w: np.maximum(_conv(x, w[0], w[1], (2, 2), "same"), 0)),
    "MaxPooling2D": ((5, 5, 2), {"pool_size": [2, 2], "strides": [1, 1], "padding": "valid",
                                 "data_format": "channels_last"}, [],
                     lambda x, w: _windows(x, (2, 2), (1, 1), "valid", -np.inf)[0].max(3)),
    "AveragePooling2D": ((5, 5, 2), {"pool_size": [2, 2], "strides": [2, 2], "padding": "same",
                                     "data_format": "channels_last"}, [],
                         lambda x, w: _avg_pool(x, (2, 2), (2, 2), "same")),
    "GlobalAveragePooling2D": ((3, 4, 2), {"data_format": "channels_last", "keepdims": False}, [],
                               lambda x, w: x.mean((1, 2))),
    "GlobalMaxPooling2D": ((3, 4, 2), {"data_format": "channels_last", "keepdims": True}, [],
                           lambda x, w: x.max((1, 2), keepdims=True)),
    "BatchNormalization": ((3, 3, 2), {"axis": -1, "momentum": 0.9, "epsilon": 0.01, "center": False,
                                       "scale": True, "synchronized": False, "renorm": False},
                           [_w(2), _w(2), np.abs(_w(2)) + 0.5],
                           lambda x, w: _normalize(x, w[1], w[2], 0.01) * w[0]),
    "LayerNormalization": ((6,), {"axis": -1, "epsilon": 0.001, "center": True, "scale": True,
                                  "rms_scaling": False}, [_w(6), _w(6)],
                           lambda x, w: _normalize(x, x.mean(-1, keepdims=True), x.var(-1, keepdims=True),
                                                   0.001) * w[0] + w[1]),
    "Add": ((4,), {}, [_w(4, 4), _w(4)], lambda x, w: x + (x @ w[0] + w[1])),
    "Concatenate": ((4,), {"axis": -1}, [_w(4, 4), _w(4)],
                    lambda x, w: np.concatenate([x, x @ w[0] + w[1]], -1)),
}


def test_every_table_entry_has_a_case():
    assert set(LAYER_CASES) == set(LAYER_TABLE)


@pytest.mark.parametrize("class_name", sorted(LAYER_TABLE))
def test_layer_matches_keras_definition(tmp_path, class_name):
    shape, config, weights, reference = LAYER_CASES[class_name]
    x = RNG.normal(size=(3, *shape)).astype(np.float32)
    path = tmp_path / "m.keras"
    if class_name in ("Add", "Concatenate"):
        dense = kf.layer("Dense", "hidden", units=4, activation="linear", use_bias=True)
        kf.functional(path, shape, [(dense, ["input_layer"], weights),
                                    (kf.layer(class_name, "merged", **config), ["input_layer", "hidden"], [])],
                      "merged")
    elif class_name == "Reshape":     # Keras writes the size of its -1 only as the next layer's input shape
        after = dict(kf.layer("Flatten", "after"), build_config={"input_shape": [None, 3, 2]})
        kf.sequential(path, shape, [(kf.layer(class_name, "probe", **config), weights), (after, [])])
        reference = (lambda r: lambda x, w: r(x, w).reshape(len(x), -1))(reference)
    else:
        kf.sequential(path, shape, [(kf.layer(class_name, "probe", **config), weights)])
    _, got = _predict(tmp_path, path, x)
    np.testing.assert_allclose(got, reference(x.astype(np.float64), weights), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_activation_matches_keras_definition(tmp_path, name):
    w = [_w(4, 3), _w(3)]
    kf.sequential(tmp_path / "m.keras", (4,), [(kf.layer("Dense", "d", units=3, activation=name), w)])
    x = RNG.normal(size=(5, 4)).astype(np.float32)
    _, got = _predict(tmp_path, tmp_path / "m.keras", x)
    np.testing.assert_allclose(got, KERAS_ACTIVATIONS[name](x.astype(np.float64) @ w[0] + w[1]), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- files written by real Keras

@pytest.mark.parametrize("name", ["mlp", "cnn", "graph"])
def test_real_keras_models_predict_as_keras(tmp_path, name):
    conversion = convert(DATA / f"{name}.keras")
    conversion.write(tmp_path / "m.model", tmp_path / "m.npz")
    text = (tmp_path / "m.model").read_text()
    assert text.startswith(f"# Converted by modelc from-keras from {name}.keras (Keras 3.15.1).")
    from modelc.cli import main
    assert main(["check", str(tmp_path / "m.model")]) == 0
    ref = np.load(DATA / f"{name}.npz")
    model = modelc.load(str(tmp_path / "m.model"), weights=str(tmp_path / "m.npz"), target="numpy")
    np.testing.assert_allclose(model.predict(ref["x"]), ref["y"], rtol=1e-5, atol=1e-5)
    if name == "cnn":     # trained: the moving statistics are Keras's, not the initial 0 and 1
        assert np.abs(conversion.params["batch_normalization.moving_mean"]).max() > 0.1


def test_real_keras_compile_config(tmp_path):
    assert "optimizer sgd(lr=0.05, momentum=0.9)" in convert(DATA / "cnn.keras").spec_text
    text = convert(DATA / "graph.keras").spec_text
    assert "loss      binary_crossentropy(y, out, label_smoothing=0.05)" in text
    assert "metrics   accuracy, mae" in text and "target y: f32[2]" in text
    assert "target y: int[] classes 4" in convert(DATA / "mlp.keras").spec_text


def test_cpu_target_agrees(tmp_path):
    ref = np.load(DATA / "mlp.npz")
    _, got = _predict(tmp_path, DATA / "mlp.keras", ref["x"], target="cpu")
    np.testing.assert_allclose(got, ref["y"], rtol=1e-5, atol=1e-5)


def test_keras_round_trip(tmp_path):
    keras = pytest.importorskip("keras")
    inputs = keras.Input((5,))
    h = keras.layers.Dense(4, activation="elu")(inputs)
    h = keras.layers.LayerNormalization(center=False)(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    model.save(tmp_path / "k.keras")
    x = RNG.normal(size=(6, 5)).astype(np.float32)
    _, got = _predict(tmp_path, tmp_path / "k.keras", x)
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- compile configurations

def _compiled(tmp_path, compile_config):
    w = [_w(4, 3), _w(3)]
    kf.sequential(tmp_path / "m.keras", (4,), [(kf.layer("Dense", "d", units=3, activation="softmax"), w)],
                  compile_config=compile_config)
    return convert(tmp_path / "m.keras")


def test_schedule_loss_object_and_metric_objects(tmp_path):
    text = _compiled(tmp_path, {
        "loss": {"class_name": "CategoricalCrossentropy", "config": {"name": "cce", "reduction": "sum_over_batch_size",
                                                                     "from_logits": False, "label_smoothing": 0.1,
                                                                     "axis": -1}},
        "optimizer": {"class_name": "Adam", "config": {"name": "adam", "learning_rate": {
            "class_name": "ExponentialDecay", "config": {"initial_learning_rate": 0.1, "decay_steps": 10,
                                                         "decay_rate": 0.5, "staircase": True}},
            "beta_1": 0.8, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": False, "use_ema": False}},
        "metrics": [{"class_name": "TopKCategoricalAccuracy", "config": {"name": "t", "k": 2}}, "auc"]}).spec_text
    assert "target y: f32[3] onehot" in text
    assert "loss      categorical_crossentropy(y, d, label_smoothing=0.1)" in text
    assert "optimizer adam(lr=0.1, beta_1=0.8)" in text
    assert "schedule exponential_decay(rate=0.5, steps=10, staircase=true)" in text
    assert "metrics   top_k_categorical_accuracy(k=2)" in text


def test_unknown_metric_is_a_note(tmp_path):
    conversion = _compiled(tmp_path, {"loss": "mse", "optimizer": "sgd", "metrics": ["auc"]})
    assert any("auc" in n for n in conversion.notes)


@pytest.mark.parametrize("optimizer, words", [
    ({"class_name": "Adam", "config": {"amsgrad": True}}, "amsgrad=true"),
    ({"class_name": "Adam", "config": {"weight_decay": 0.01}}, "weight_decay=0.01"),
    ({"class_name": "SGD", "config": {"use_ema": True}}, "use_ema=true"),
    ({"class_name": "Lion", "config": {}}, "Lion"),
])
def test_optimizer_refusals(tmp_path, optimizer, words):
    with pytest.raises(ModelcError, match="optimizer") as e:
        _compiled(tmp_path, {"loss": "mse", "optimizer": optimizer})
    assert words in e.value.message


def test_loss_reduction_refused(tmp_path):
    with pytest.raises(ModelcError) as e:
        _compiled(tmp_path, {"loss": {"class_name": "MeanSquaredError", "config": {"reduction": "sum"}},
                             "optimizer": "adam"})
    assert "MeanSquaredError" in e.value.message and "reduction='sum'" in e.value.message


def test_uncompiled_spec_is_usable(tmp_path):
    kf.sequential(tmp_path / "m.keras", (4,), [(kf.layer("Dense", "d", units=2), [_w(4, 2), _w(2)])])
    conversion = convert(tmp_path / "m.keras")
    assert "loss" not in conversion.spec_text.split("# The Keras model")[0]
    assert "# loss      mean_squared_error(y, d)" in conversion.spec_text


# ---------------------------------------------------------------- refusals

def _seq(tmp_path, entry, weights=(), **kw):
    kf.sequential(tmp_path / "m.keras", (4, 4, 2), [(entry, list(weights))], **kw)
    return tmp_path / "m.keras"


def test_unsupported_layer(tmp_path):
    with pytest.raises(ModelcError, match=r"layer 'memory' \(LSTM\): modelc has no LSTM layer"):
        convert(_seq(tmp_path, kf.layer("LSTM", "memory", units=3)))


def test_unsupported_option(tmp_path):
    entry = kf.layer("Conv2D", "c", filters=2, kernel_size=[3, 3], dilation_rate=[2, 2])
    with pytest.raises(ModelcError, match=r"layer 'c' \(Conv2D\): modelc cannot express dilation_rate=\[2, 2\]"):
        convert(_seq(tmp_path, entry, [_w(3, 3, 2, 2), _w(2)]))


def test_unknown_option_with_a_value(tmp_path):
    with pytest.raises(ModelcError, match=r"'f' \(Flatten\): modelc cannot express future_option=3"):
        convert(_seq(tmp_path, kf.layer("Flatten", "f", future_option=3)))


def test_regularizer_refused(tmp_path):
    entry = kf.layer("Dense", "d", units=2, kernel_regularizer={"class_name": "L2", "config": {"l2": 0.01}})
    kf.sequential(tmp_path / "m.keras", (4,), [(entry, [_w(4, 2), _w(2)])])
    with pytest.raises(ModelcError, match="kernel_regularizer"):
        convert(tmp_path / "m.keras")


def test_functional_dropout_and_batch_norm_with_the_training_keras_records(tmp_path):
    """Keras writes `training: false` on these calls; fit and predict replace it, so it is no option."""
    bn = kf.layer("BatchNormalization", "bn", axis=-1, momentum=0.99, epsilon=0.001, center=True, scale=True)
    stats = [_w(4), _w(4), _w(4), np.abs(_w(4)) + 0.5]
    drop = kf.layer("Dropout", "drop", rate=0.5, seed=None, noise_shape=None)
    kf.functional(tmp_path / "m.keras", (4,), [(bn, ["input_layer"], stats), (drop, ["bn"], [])], "drop")
    x = RNG.normal(size=(5, 4)).astype(np.float32)
    conversion, got = _predict(tmp_path, tmp_path / "m.keras", x)
    gamma, beta, mean, var = (w.astype(np.float64) for w in stats)
    np.testing.assert_allclose(got, (x - mean) / np.sqrt(var + 0.001) * gamma + beta, rtol=1e-5, atol=1e-5)
    assert "dropout(0.5)" in conversion.spec_text


def test_a_call_option_modelc_lacks_is_refused(tmp_path):
    kf.functional(tmp_path / "m.keras", (3,), [(kf.layer("Dense", "d", units=3), ["input_layer"], [_w(3, 3), _w(3)])],
                  "d")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        import json
        config = json.loads(z.read("config.json"))
    config["config"]["layers"][1]["inbound_nodes"][0]["kwargs"] = {"mask": [True, False]}
    kf.write(tmp_path / "masked.keras", config, [])
    with pytest.raises(ModelcError, match=r"layer 'd' \(Dense\) is called with mask="):
        convert(tmp_path / "masked.keras")


def test_multi_input_refused(tmp_path):
    add = kf.layer("Add", "s")
    kf.functional(tmp_path / "m.keras", (3,), [(add, ["a", "b"], [])], "s", inputs=("a", "b"))
    with pytest.raises(ModelcError, match="2 inputs"):
        convert(tmp_path / "m.keras")


def test_shared_layer_and_nested_model_refused(tmp_path):
    kf.functional(tmp_path / "m.keras", (3,), [(kf.layer("Dense", "d", units=3), ["input_layer"], [_w(3, 3), _w(3)])],
                  "d")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        import json
        config = json.loads(z.read("config.json"))
    config["config"]["layers"][1]["inbound_nodes"] *= 2
    kf.write(tmp_path / "shared.keras", config, [])
    with pytest.raises(ModelcError, match=r"layer 'd' \(Dense\) is called 2 times"):
        convert(tmp_path / "shared.keras")
    config["config"]["layers"][1] = dict(config["config"]["layers"][1], class_name="Sequential")
    kf.write(tmp_path / "nested.keras", config, [])
    with pytest.raises(ModelcError, match="layer 'd' is a Sequential model inside the model"):
        convert(tmp_path / "nested.keras")


def test_damaged_files(tmp_path):
    (tmp_path / "text.keras").write_text("hello")
    with pytest.raises(ModelcError, match=r"text.keras' is not a .keras file \(not a zip archive\)"):
        convert(tmp_path / "text.keras")
    entry = kf.layer("Flatten", "f")
    with pytest.raises(ModelcError, match="has no 'model.weights.h5'"):
        convert(_seq(tmp_path, entry, members={"model.weights.h5": None}))
    with pytest.raises(ModelcError, match="its 'config.json' is not valid JSON"):
        convert(_seq(tmp_path, entry, members={"config.json": b"{"}))
    with pytest.raises(ModelcError, match="its 'model.weights.h5' is not a readable HDF5 file"):
        convert(_seq(tmp_path, entry, members={"model.weights.h5": b"not hdf5"}))


def test_missing_variable_and_wrong_shape(tmp_path):
    dense = kf.layer("Dense", "d", units=2, use_bias=True)
    kf.sequential(tmp_path / "m.keras", (4,), [(dense, [_w(4, 2)])])
    with pytest.raises(ModelcError, match=r"layer 'd' \(Dense\): the file's model.weights.h5 holds 1 variable"):
        convert(tmp_path / "m.keras")
    kf.sequential(tmp_path / "m.keras", (4,), [(dense, [_w(4, 3), _w(2)])])
    with pytest.raises(ModelcError, match=r"layer 'd' \(Dense\) variable 0 \(kernel\) has shape \[4, 3\]"):
        convert(tmp_path / "m.keras")


def test_h5py_missing(tmp_path, monkeypatch):
    path = _seq(tmp_path, kf.layer("Flatten", "f"))
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "h5py" else real(name, *a))
    with pytest.raises(ModelcError) as e:
        convert(path)
    assert e.value.hint == "pip install 'modelc[keras]'"


def test_names_are_made_spec_names(tmp_path):
    kf.sequential(tmp_path / "m.keras", (4,), [(kf.layer("Dense", "my-dense/1", units=2), [_w(4, 2), _w(2)]),
                                               (kf.layer("ReLU", "loss"), [])])
    conversion = convert(tmp_path / "m.keras", name="renamed")
    assert "model renamed" in conversion.spec_text and "=> my_dense_1" in conversion.spec_text
    assert set(conversion.params) == {"my_dense_1.kernel", "my_dense_1.bias"}
    assert any("'my-dense/1' is 'my_dense_1'" in n for n in conversion.notes)
