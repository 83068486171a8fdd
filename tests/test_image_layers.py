"""Convolution, pooling and normalization layers against Keras 3's own outputs
(tests/data/keras_layers.npz, written by tests/keras_layer_values.py), on the numpy
and cpu targets; and their static checks, summary rows and moving statistics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelc
from modelc.errors import SpecError
from modelc.runtime.summary import summarize
from tests.keras_layer_values import BATCH_NORM_SHAPE, CASES, VALUES, inputs

KERAS = np.load(VALUES)
TARGETS = ["numpy", "cpu"]


def _spec(shape, call, tail=""):
    dims = ", ".join(map(str, shape[1:]))
    return f"model case\ninput x: f32[{dims}]\nnetwork {{\n    x -> {call} => y\n}}\n{tail}\n"


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(CASES))
def test_layer_matches_keras(name, target):
    seed = list(CASES).index(name)
    _, _, shape, call = CASES[name]
    model = modelc.compile(_spec(shape, call), target=target, seed=0)
    params = model.program.params
    model.set_weights([inputs(tuple(p.value.shape), 10 * seed + 1 + i) for i, p in enumerate(params)])
    got = model.predict(inputs(shape, seed))
    np.testing.assert_allclose(got, KERAS[f"{name}.y"], rtol=1e-5, atol=1e-6)


BN_TAIL = """target t: f32[3, 3, 2]
loss      mean_squared_error(t, y)
optimizer sgd(lr=0.1)"""


@pytest.mark.parametrize("target", TARGETS)
def test_batch_normalization_is_kerass(target):
    """Training: batch statistics, and the moving ones updated as Keras updates them;
    inference: the moving statistics."""
    x = inputs(BATCH_NORM_SHAPE, 99)
    model = modelc.compile(_spec(BATCH_NORM_SHAPE, "batch_normalization", BN_TAIL), target=target, seed=0)
    gamma, beta = inputs((2,), 100), inputs((2,), 101)
    names = [p.value.name for p in model.program.params]
    assert names == ["y.gamma", "y.beta", "y.moving_mean", "y.moving_variance"]
    model.set_weights([gamma, beta, np.zeros(2, np.float32), np.ones(2, np.float32)])
    history = model.fit(x, np.zeros_like(x), epochs=1, batch_size=len(x), shuffle=False, verbose=0)
    # the loss is the mean square of the training-mode output (the target is zero)
    assert history.history["loss"][0] == pytest.approx(float(np.mean(KERAS["bn.train_y"] ** 2)), rel=1e-5)
    weights = model.named_weights()
    np.testing.assert_allclose(weights["y.moving_mean"], KERAS["bn.moving_mean"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(weights["y.moving_variance"], KERAS["bn.moving_variance"], rtol=1e-6)
    model.set_weights([gamma, beta, KERAS["bn.moving_mean"], KERAS["bn.moving_variance"]])
    np.testing.assert_allclose(model.predict(x), KERAS["bn.infer_y"], rtol=1e-5, atol=1e-6)


def test_summary_counts_moving_statistics_as_non_trainable():
    spec = _spec((1, 8, 8, 3), "conv2d(4, 3, use_bias=false) -> batch_normalization")
    text = summarize(modelc.compile(spec, target="numpy").program)
    assert "Total params: 124 (496.00 B)" in text
    assert "Trainable params: 116 (464.00 B)" in text
    assert "Non-trainable params: 8 (32.00 B)" in text
    assert "(None, 6, 6, 4)" in text


def test_checkpoints_carry_the_moving_statistics(tmp_path):
    x = inputs(BATCH_NORM_SHAPE, 99)
    model = modelc.compile(_spec(BATCH_NORM_SHAPE, "batch_normalization", BN_TAIL), target="numpy", seed=0)
    model.fit(x, np.zeros_like(x), epochs=2, batch_size=2, verbose=0)
    path = model.save(tmp_path / "bn.npz")
    again = modelc.load(_spec(BATCH_NORM_SHAPE, "batch_normalization", BN_TAIL), path, target="cpu")
    for name, value in model.named_weights().items():
        np.testing.assert_array_equal(again.named_weights()[name], value)
    np.testing.assert_allclose(again.predict(x), model.predict(x), rtol=1e-6, atol=1e-6)


def test_max_pooling_gives_a_tie_to_the_first_element():
    """Ties have no derivative: the whole gradient goes to the first largest element of the
    window, in row-major order, as TensorFlow and PyTorch route it."""
    from modelc.compiler.primitives import PRIMITIVES
    x = np.array([[[[1.0], [3.0]], [[3.0], [2.0]]]], np.float32)     # the 3s tie
    dx = PRIMITIVES["max_pool_grad"].impl(np.ones((1, 1, 1, 1), np.float32), x, window=(2, 2), strides=(2, 2),
                                          pads=(0, 0, 0, 0))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0.0, 1.0], [0.0, 0.0]])


def test_unit_channel_axis_is_added_to_images():
    model = modelc.compile(_spec((1, 4, 4, 1), "conv2d(2, 3)"), target="numpy", seed=0)
    x = inputs((3, 4, 4), 5)
    np.testing.assert_array_equal(model.predict(x), model.predict(x[..., None]))


BAD = [
    ("input x: f32[28, 28]", "conv2d(8, 3)",
     "conv2d needs [height, width, channels], but its input has shape [28, 28]", "declare f32[28, 28, 1]"),
    ("input x: f32[4, 4, 1]", "conv2d(8, 5)", "conv2d: its 5x5 kernel is larger than its 4x4 input", "padding=same"),
    ("input x: f32[8, 8, 1]", "conv2d(8, 3, strides=0)", "'strides' must be at least 1", None),
    ("input x: f32[8, 8, 1]", "conv2d(8, 3, padding=sanme)", "unknown padding 'sanme'; did you mean 'same'?", None),
    ("input x: f32[8, 8, 1]", "max_pooling2d(3) -> max_pooling2d(3) -> max_pooling2d(3)",
     "max_pooling2d: its 3x3 pooling window is larger than its 2x2 input", None),
    ("input x: f32[8, 8, 1]", "conv2d(8, [3, 3, 3])", "'kernel_size' must be a whole number or [height, width]",
     None),
    ("input x: f32[10]", "batchnorm -> maxpool2d(2)", "max_pooling2d needs [height, width, channels]", None),
]


@pytest.mark.parametrize("decl, chain, message, hint", BAD)
def test_static_mistakes_are_located(decl, chain, message, hint):
    spec = f"model bad\n{decl}\nnetwork {{\n    x -> {chain} => y\n}}\n"
    with pytest.raises(SpecError) as info:
        modelc.compile(spec, target="numpy")
    err = info.value
    assert message in err.message
    assert err.pos is not None and err.pos.line == 4
    if hint:
        assert hint in (err.hint or "")


def test_keras_class_names_are_understood():
    spec = _spec((1, 8, 8, 1), "Conv2D(4, 3) -> MaxPooling2D -> BatchNormalization -> GlobalAveragePooling2D")
    kinds = [layer.kind for layer in modelc.compile(spec, target="numpy").program.layers]
    assert kinds == ["conv2d", "max_pooling2d", "batch_normalization", "global_average_pooling2d"]


ROOT = Path(__file__).resolve().parent.parent


def _verify(spec: Path, **options):
    from modelc.compiler.build import build_program
    from modelc.grammar.parser import parse_file
    from modelc.runtime.verify import verify
    return verify(build_program(parse_file(str(spec))), ["numpy", "cpu"], base_dir=str(spec.parent),
                  quiet=True, **options)


def test_cpu_trains_the_small_convnet_as_numpy_does():
    report = _verify(ROOT / "specs" / "images_cnn.model", steps=10)
    assert report.passed, report.text()


@pytest.mark.slow
def test_cpu_trains_the_mnist_convnet_as_numpy_does():
    report = _verify(ROOT / "specs" / "mnist_cnn.model")
    assert report.passed, report.text()
