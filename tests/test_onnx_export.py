"""ONNX export: every spec, layer, activation and geometry exported, checked by onnx's full
checker and run by onnxruntime, against the numpy target's predict (and against Keras 3's
stored outputs for the image layers); the layouts (transposes only where modelc's order is
needed), the opset range, and the mistakes refused."""
from __future__ import annotations

import ast as pyast
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import modelc  # noqa: E402
from modelc.compiler import elementwise, expr  # noqa: E402
from modelc.compiler.codegen import onnx_export, onnx_rules  # noqa: E402
from modelc.compiler.layers import ACTIVATION_NAMES, LAYERS  # noqa: E402
from modelc.errors import ModelcError  # noqa: E402
from tests.keras_layer_values import BATCH_NORM_SHAPE, CASES, VALUES, inputs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.model"))
KERAS_MODELS = sorted((ROOT / "tests" / "data" / "keras_models").glob("*.keras"))
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def _spec(dims, chain: str) -> str:
    return f"model case\ninput x: f32[{', '.join(map(str, dims))}]\nnetwork {{\n    {chain} => y\n}}\n"


def _randomize(model, seed: int = 0):
    """Weights that hide no bug: kernels at their fan-in scale, biases and betas away from zero,
    gammas away from one, moving means far from 0 and moving variances far from 1."""
    rng = np.random.default_rng(seed)
    weights = {}
    for info in model.program.params:
        name, shape = info.value.name, info.value.shape
        if name.endswith(".moving_variance"):
            weights[name] = rng.uniform(2.0, 5.0, shape)
        elif name.endswith(".moving_mean"):
            weights[name] = rng.uniform(-1.5, 1.5, shape)
        elif name.endswith(".gamma"):
            weights[name] = rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)
        else:
            weights[name] = rng.normal(0.0, 1.0 / np.sqrt(info.fan_in), shape)
    model.set_weights(weights)
    return model


def _session(path_or_model):
    model = onnx.load(str(path_or_model)) if isinstance(path_or_model, Path) else path_or_model
    onnx.checker.check_model(model, full_check=True)
    return model, ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _agree(model, x, tmp_path, opset=None):
    """Export `model`, run it with onnxruntime and compare with the numpy target's predict."""
    path = tmp_path / f"{model.name}.onnx"
    used = model.export_onnx(path, opset=opset)
    proto, session = _session(path)
    assert used == proto.opset_import[0].version == (opset or onnx_export.DEFAULT_OPSET)
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(got, model.predict(x), **TOLERANCE)
    return proto


def _compile(dims, chain, seed=0):
    return _randomize(modelc.compile(_spec(dims, chain), target="numpy", seed=0), seed)


def _x(dims, n=3, seed=1, scale=1.5):
    return np.random.default_rng(seed).uniform(-scale, scale, (n, *dims)).astype(np.float32)


def _ops(proto, op_type=None):
    return [n for n in proto.graph.node if op_type is None or n.op_type == op_type]


# ---------------------------------------------------------------- every spec of specs/

@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_spec_exports_and_agrees_with_predict(spec, tmp_path):
    model = _randomize(modelc.compile(spec, target="numpy"))
    x = _x(model.program.input.shape[1:], n=4)
    proto = _agree(model, x, tmp_path)
    assert proto.producer_name == "modelc" and proto.producer_version == modelc.__version__
    assert model.name in proto.graph.doc_string
    (graph_input,) = proto.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", *model.program.input.shape[1:]]
    assert not _ops(proto, "Dropout")


def test_the_batch_axis_is_symbolic(tmp_path):
    model = _randomize(modelc.compile(ROOT / "specs" / "images_cnn.model", target="numpy"))
    model.export_onnx(tmp_path / "m.onnx")
    _, session = _session(tmp_path / "m.onnx")
    for n in (1, 7):
        x = _x(model.program.input.shape[1:], n=n, seed=n)
        (got,) = session.run(None, {"image": x})
        np.testing.assert_allclose(got, model.predict(x), **TOLERANCE)


# ---------------------------------------------------------------- every layer and primitive

# one small network per layer of LAYERS (the activations are enumerated below)
LAYER_CASES = {
    "dense": ((5,), "x -> dense(4, tanh)"),
    "flatten": ((3, 4, 2), "x -> conv2d(2, 2) -> flatten"),
    "reshape": ((12,), "x -> reshape([2, 3, 2]) -> conv2d(2, 2, padding=same) -> reshape([3, 4])"),
    "dropout": ((6,), "x -> dense(5, relu) -> dropout(0.5) -> dense(3)"),
    "add": ((5, 4, 2), "x -> conv2d(3, 3, padding=same) => a\n    x -> conv2d(3, 1) => b\n    (a, b, a) -> add"),
    "concat": ((6,), "x -> dense(4) => a\n    x -> dense(2, relu) => b\n    (a, b) -> concat"),
    "conv2d": ((6, 5, 2), "x -> conv2d(3, [3, 2], elu, strides=[2, 1], padding=same)"),
    "max_pooling2d": ((5, 5, 2), "x -> max_pooling2d(2, padding=same)"),
    "average_pooling2d": ((5, 5, 2), "x -> average_pooling2d(2, padding=same)"),
    "global_average_pooling2d": ((4, 3, 3), "x -> conv2d(2, 2) -> global_average_pooling2d"),
    "global_max_pooling2d": ((4, 3, 3), "x -> global_max_pooling2d(keepdims=true)"),
    "batch_normalization": ((4, 3, 2), "x -> conv2d(3, 2) -> batch_normalization -> flatten"),
    "layer_normalization": ((4, 3, 2), "x -> conv2d(3, 2) -> layer_normalization(center=false)"),
}


def test_the_cases_cover_every_layer():
    assert set(LAYER_CASES) | set(ACTIVATION_NAMES) == set(LAYERS)


def test_every_primitive_of_a_predict_graph_has_a_rule():
    """The primitives every layer (and activation) puts into a predict graph."""
    chains = list(LAYER_CASES.values()) + [((4,), f"x -> {name}") for name in ACTIVATION_NAMES]
    used = {op.prim for dims, chain in chains
            for op in modelc.compile(_spec(dims, chain), target="numpy").program.predict.ops}
    assert "dropout" not in used
    assert used - set(onnx_rules.RULES) == set()


@pytest.mark.parametrize("name", list(LAYER_CASES))
def test_every_layer_agrees(name, tmp_path):
    dims, chain = LAYER_CASES[name]
    model = _compile(dims, chain, seed=len(name))
    _agree(model, _x(dims, seed=len(name)), tmp_path)


def test_a_primitive_without_a_rule_is_refused_by_name(monkeypatch, tmp_path):
    monkeypatch.delitem(onnx_rules.RULES, "max_pool")
    model = _compile((4, 4, 1), "x -> max_pooling2d(2)")
    with pytest.raises(ModelcError, match="'max_pool'"):
        model.export_onnx(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------- activations

# negatives, zero and large values, in one row
EDGES = np.array([[-60.0, -20.0, -3.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 1.0, 3.0, 20.0, 60.0]], np.float32)


@pytest.mark.parametrize("call", list(ACTIVATION_NAMES) + [
    "leaky_relu(negative_slope=0.05)", "elu(alpha=0.3)", "softmax(temperature=0.6)",
    "log_softmax(temperature=2.5)", "softmax(temperature=1)"])
def test_every_activation_agrees(call, tmp_path):
    model = _compile((12,), f"x -> {call}")
    x = np.concatenate([EDGES, EDGES[:, ::-1] / 7, _x((12,), n=2)])
    proto = _agree(model, x, tmp_path)
    if call == "softmax(temperature=1)":
        assert not _ops(proto, "Div")


def test_softmax_over_channels_of_a_convolution(tmp_path):
    model = _compile((4, 3, 2), "x -> conv2d(3, 2, softmax) -> max_pooling2d(2, padding=same)")
    proto = _agree(model, _x((4, 3, 2)), tmp_path)
    (softmax,) = _ops(proto, "Softmax")
    assert [a.i for a in softmax.attribute if a.name == "axis"] == [1]     # channels first, not transposed


def test_every_function_of_the_expression_language_has_a_lowering():
    assert set(expr.FUNCTIONS) == set(onnx_rules.CALLS) | {"zero", "one"}


# every function and operator of the language, in formulas an activation could have
FORMULAS = [
    "clip(x, -1.5, 2) + sign(x) * sqrt(abs(x)) - log(1 + abs(x)) + minimum(x, 0.5) * maximum(x, -0.25)",
    "softplus(x) - x ** 2 / 3 + log1p(abs(x)) * expm1(-abs(x)) + tanh(x) * sigmoid(-x) + erf(x) + exp(-x * x)",
    "where((x > 1) | (x <= -1), one(x), zero(x)) + where((x != 0) & (x >= 0.5), 0.5, -0.5)"
    " + where(x < 0, +x, -x) + where(x == 0, 3.0, 0.0)",
    "zero(x) + 2.5",
]


@pytest.mark.parametrize("opset", [onnx_export.MIN_OPSET, onnx_export.MAX_OPSET])
@pytest.mark.parametrize("formula", FORMULAS)
def test_any_formula_lowers_as_the_numpy_target_evaluates_it(formula, opset, monkeypatch, tmp_path):
    """An activation that does not exist yet needs no ONNX code: its expression is lowered."""
    monkeypatch.setitem(elementwise.ACTIVATIONS, "relu", elementwise.Activation("relu", formula, "one(x)"))
    model = _compile((12,), "x -> relu")
    x = np.concatenate([EDGES / 10, _x((12,), n=2)])
    _agree(model, x, tmp_path, opset=opset)


def test_an_unknown_construct_of_a_formula_is_refused(monkeypatch, tmp_path):
    monkeypatch.setitem(elementwise.ACTIVATIONS, "relu", elementwise.Activation("relu", "x % 2", "one(x)"))
    monkeypatch.setattr(expr, "parse", lambda text: pyast.parse(text, mode="eval"))
    model = modelc.compile(_spec((3,), "x -> relu"), target="numpy")
    with pytest.raises(ModelcError, match="x % 2"):
        model.export_onnx(tmp_path / "m.onnx")


# ---------------------------------------------------------------- convolution and pooling geometry

@pytest.mark.parametrize("dims, call", [
    ((5, 5, 2), "conv2d(3, 3)"),                                   # odd, valid
    ((5, 5, 2), "conv2d(3, 3, padding=same)"),                     # odd, same
    ((6, 5, 2), "conv2d(3, 2, strides=2, padding=same)"),          # even, strided, ragged same
    ((7, 6, 1), "conv2d(2, [3, 2], relu, strides=[2, 3])"),        # rectangular kernel and strides
    ((6, 7, 3), "conv2d(4, [2, 4], strides=[3, 2], padding=same, use_bias=false)"),
    ((4, 4, 2), "conv2d(2, 4, padding=same)"),                     # even kernel, same: more padding after
])
def test_convolutions_agree(dims, call, tmp_path):
    _agree(_compile(dims, f"x -> {call}"), _x(dims), tmp_path)


@pytest.mark.parametrize("dims, call", [
    ((5, 5, 2), "max_pooling2d(2)"),                               # valid, ragged: the last row dropped
    ((5, 5, 2), "max_pooling2d(2, padding=same)"),                 # same, ragged: padding never wins
    ((7, 7, 2), "max_pooling2d(3, strides=2)"),                    # overlapping
    ((4, 5, 2), "max_pooling2d([3, 2], strides=[1, 2], padding=same)"),
    ((5, 5, 2), "average_pooling2d(2)"),
    ((5, 5, 2), "average_pooling2d(2, padding=same)"),             # the padding is left out of the mean
    ((4, 5, 2), "average_pooling2d([3, 2], strides=[1, 2], padding=same)"),
    ((6, 6, 1), "average_pooling2d(3, strides=2, padding=same)"),
    ((4, 3, 3), "global_average_pooling2d"),
    ((4, 3, 3), "global_max_pooling2d"),
    ((4, 3, 3), "global_average_pooling2d(keepdims=true)"),
])
def test_poolings_agree(dims, call, tmp_path):
    # all negative inputs: a padding of zeros would win a max and change a mean
    x = _x(dims) - 2.0
    _agree(_compile(dims, f"x -> {call}"), x, tmp_path)


# ---------------------------------------------------------------- layouts

def _transposes_reading(proto, names):
    return [n for n in _ops(proto, "Transpose") if n.input[0] in names]


def test_flatten_after_a_convolution_reads_modelcs_order(tmp_path):
    """The NCHW trap: a flatten must see [h, w, c] order, so the dense kernel still fits."""
    model = _compile((5, 4, 3), "x -> conv2d(3, 2) -> flatten -> dense(4)")
    proto = _agree(model, _x((5, 4, 3)), tmp_path)
    assert len(_ops(proto, "Transpose")) == 2


def test_a_convnet_is_transposed_at_its_edges_only(tmp_path):
    model = _randomize(modelc.compile(ROOT / "specs" / "mnist_cnn.model", target="numpy"))
    proto = _agree(model, _x((28, 28, 1), n=2), tmp_path)
    transposes = _ops(proto, "Transpose")
    assert len(transposes) == 2
    assert transposes[0].input[0] == "image"                    # the input, once
    (reshape,) = _ops(proto, "Reshape")
    assert reshape.input[0] == transposes[1].output[0]          # and once before the flatten
    assert len(_ops(proto, "Conv")) == 2 and len(_ops(proto, "MaxPool")) == 2


def test_a_global_pooling_needs_no_transpose_back(tmp_path):
    """images_cnn: conv, batch norm, pool, conv, layer norm, pools, then a 1x1 image reshaped:
    its channels-first order is already modelc's."""
    model = _randomize(modelc.compile(ROOT / "specs" / "images_cnn.model", target="numpy"))
    proto = _agree(model, _x((12, 12, 1), n=3), tmp_path)
    (transpose,) = _ops(proto, "Transpose")
    assert transpose.input[0] == "image"


def test_an_image_output_is_transposed_back(tmp_path):
    model = _compile((6, 5, 2), "x -> conv2d(3, 3, relu, padding=same) -> conv2d(2, 3) -> conv2d(2, 1)")
    proto = _agree(model, _x((6, 5, 2)), tmp_path)
    assert len(_ops(proto, "Transpose")) == 2
    assert proto.graph.output[0].name == "y"


@pytest.mark.parametrize("axis, concat_axis", [(-1, 1), (1, 2), (2, 3)])
def test_concat_of_convolutions_stays_channels_first(axis, concat_axis, tmp_path):
    chain = (f"x -> conv2d(3, 3, padding=same) => a\n    x -> conv2d(2, 3, relu, padding=same) => b\n"
             f"    (a, b) -> concat(axis={axis}) -> conv2d(2, 2)")
    if axis != -1:       # joining along height or width needs the same channels
        chain = chain.replace("conv2d(2, 3, relu", "conv2d(3, 3, relu")
    proto = _agree(_compile((5, 4, 2), chain), _x((5, 4, 2)), tmp_path)
    (concat,) = _ops(proto, "Concat")
    assert [a.i for a in concat.attribute] == [concat_axis]
    assert len(_ops(proto, "Transpose")) == 2            # the input's, and the output's


def test_add_of_a_convolution_and_its_input_transposes_the_input_once(tmp_path):
    chain = ("x -> conv2d(2, 3, padding=same) => a\n    (a, x) -> add => s\n"
             "    (s, x) -> add -> conv2d(2, 1)")
    proto = _agree(_compile((4, 4, 2), chain), _x((4, 4, 2)), tmp_path)
    assert len(_transposes_reading(proto, {"x"})) == 1


# ---------------------------------------------------------------- against Keras 3

@pytest.mark.parametrize("name", list(CASES))
def test_image_layers_agree_with_keras(name, tmp_path):
    """Keras 3.15's outputs (tests/data/keras_layers.npz) for conv with strides and same padding,
    poolings, global poolings and layer normalization, from the same weights."""
    keras = np.load(VALUES)
    seed = list(CASES).index(name)
    _, _, shape, call = CASES[name]
    model = modelc.compile(_spec(shape[1:], f"x -> {call}"), target="numpy", seed=0)
    model.set_weights([inputs(tuple(p.value.shape), 10 * seed + 1 + i) for i, p in enumerate(model.program.params)])
    model.export_onnx(tmp_path / "m.onnx")
    _, session = _session(tmp_path / "m.onnx")
    (got,) = session.run(None, {"x": inputs(shape, seed)})
    np.testing.assert_allclose(got, keras[f"{name}.y"], **TOLERANCE)


@pytest.mark.parametrize("path", KERAS_MODELS, ids=lambda p: p.stem)
def test_keras_models_converted_to_specs_agree_with_keras(path, tmp_path):
    """Models built and trained by Keras 3 (tests/keras_models.py: an MLP with dropout; a CNN with
    strides, same padding, batch normalization and global pooling; a functional graph with add and
    concatenate), converted by modelc.keras_import, exported, against Keras's own predictions."""
    pytest.importorskip("h5py")
    from modelc.keras_import import convert
    conversion = convert(path)
    stored = np.load(path.with_suffix(".npz"))
    onnx_export.export(conversion.program, conversion.params, tmp_path / "m.onnx")
    proto, session = _session(tmp_path / "m.onnx")
    (got,) = session.run(None, {session.get_inputs()[0].name: stored["x"]})
    np.testing.assert_allclose(got, stored["y"], **TOLERANCE)
    assert not _ops(proto, "Dropout")


def test_batch_normalization_agrees_with_keras_at_inference(tmp_path):
    keras = np.load(VALUES)
    model = modelc.compile(_spec(BATCH_NORM_SHAPE[1:], "x -> batch_normalization"), target="numpy", seed=0)
    model.set_weights([inputs((2,), 100), inputs((2,), 101), keras["bn.moving_mean"], keras["bn.moving_variance"]])
    model.export_onnx(tmp_path / "m.onnx")
    _, session = _session(tmp_path / "m.onnx")
    (got,) = session.run(None, {"x": inputs(BATCH_NORM_SHAPE, 99)})
    np.testing.assert_allclose(got, keras["bn.infer_y"], **TOLERANCE)


# ---------------------------------------------------------------- opsets and mistakes

@pytest.mark.parametrize("opset", [onnx_export.MIN_OPSET, onnx_rules.REDUCE_AXES_AS_INPUT - 1,
                                   onnx_rules.REDUCE_AXES_AS_INPUT, onnx_export.MAX_OPSET])
def test_each_opset_boundary_exports_every_operator(opset, tmp_path):
    """images_cnn has conv, both poolings, batch and layer normalization (ReduceMean's axes are an
    attribute before opset 18, an input from it), softmax; plus a gelu for Erf and Where."""
    model = _randomize(modelc.compile(ROOT / "specs" / "images_cnn.model", target="numpy"))
    _agree(model, _x((12, 12, 1)), tmp_path, opset=opset)
    _agree(_compile((5,), "x -> dense(6, gelu) -> leaky_relu -> log_softmax(temperature=0.5)"), _x((5,)),
           tmp_path, opset=opset)


@pytest.mark.parametrize("opset", [onnx_export.MIN_OPSET - 1, onnx_export.MAX_OPSET + 1, 0, "17", 17.0, True])
def test_an_opset_out_of_range_is_refused(opset, tmp_path):
    model = _compile((3,), "x -> dense(2)")
    with pytest.raises(ModelcError, match=f"{onnx_export.MIN_OPSET} to {onnx_export.MAX_OPSET}") as err:
        model.export_onnx(tmp_path / "m.onnx", opset=opset)
    assert err.value.hint
    assert not (tmp_path / "m.onnx").exists()


def test_without_onnx_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)        # import onnx raises ImportError
    model = _compile((3,), "x -> dense(2)")
    with pytest.raises(ModelcError, match="exporting to ONNX needs the Python package onnx") as err:
        model.export_onnx(tmp_path / "m.onnx")
    assert err.value.hint == "pip install 'modelc[onnx]'"


def test_an_opset_newer_than_the_installed_onnx_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(onnx.defs, "onnx_opset_version", lambda: onnx_export.MIN_OPSET)
    with pytest.raises(ModelcError, match=f"knows opsets up to {onnx_export.MIN_OPSET}, not "
                                          f"{onnx_export.MIN_OPSET + 1}"):
        _compile((3,), "x -> dense(2)").export_onnx(tmp_path / "m.onnx", opset=onnx_export.MIN_OPSET + 1)


def test_missing_or_misshapen_weights_are_refused(tmp_path):
    model = _compile((3,), "x -> dense(2)")
    weights = model.named_weights()
    with pytest.raises(ModelcError, match="'y.bias' is missing"):
        onnx_export.export(model.program, {"y.kernel": weights["y.kernel"]}, tmp_path / "m.onnx")
    with pytest.raises(ModelcError, match=r"'y.kernel' has shape \[2, 3\]"):
        onnx_export.export(model.program, {**weights, "y.kernel": weights["y.kernel"].T}, tmp_path / "m.onnx")


def test_a_folder_is_never_replaced(tmp_path):
    (tmp_path / "m.onnx").mkdir()
    with pytest.raises(ModelcError, match="m.onnx"):
        _compile((3,), "x -> dense(2)").export_onnx(tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").is_dir()


def test_a_network_that_passes_its_input_through(tmp_path):
    _agree(_compile((4,), "x -> linear -> flatten"), _x((4,)), tmp_path)
