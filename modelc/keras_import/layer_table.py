"""The Keras layers modelc can express, keyed by Keras class name: how each layer's config
becomes a modelc layer call, which options must hold which values, and which modelc
parameters its variables are, in the order Keras saves them (`save_own_variables`).

An entry reads the config through `Options` and returns a `Translated`; modelc's defaults
are not restated here: `render.call` leaves out what equals `modelc.compiler.layers`'s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from modelc.compiler import layers as modelc_layers
from modelc.compiler.catalog import INIT_ALIASES, INITIALIZERS
from modelc.compiler.layers import keras_snake_case
from modelc.keras_import.options import Options, shown
from modelc.errors import ModelcError

TRAINING_ONLY = "it changes training only, and modelc has no counterpart; build the model without it"
_CHANNELS_LAST = "modelc computes images as [height, width, channels] (data_format='channels_last')"
_RANDOM = {"random_normal": {"mean": 0.0, "stddev": 0.05}, "random_uniform": {"minval": -0.05, "maxval": 0.05}}


@dataclass
class KerasLayer:
    name: str
    class_name: str
    config: dict
    input_shape: tuple | None          # the shape it was built for, batch axis first, when the file says
    output_shape: tuple | None = None  # the shape the layer after it was built for, when the file says

    @property
    def what(self) -> str:
        return f"layer '{self.name}' ({self.class_name})"


@dataclass
class Translated:
    layer: str                             # the modelc layer
    options: dict[str, Any]                # its options, in modelc's terms
    variables: tuple[str, ...] = ()        # the modelc parameter of each Keras variable, in Keras's order
    notes: list[str] = field(default_factory=list)


def activation(o: Options, key: str = "activation") -> tuple[str, dict]:
    """A Keras activation (saved by name) as modelc's: the same name with the same formula
    and default options (modelc's activations are Keras 3's; the tests hold each to Keras's
    definition)."""
    value = o.take(key, "linear")
    if value is None:
        return "linear", {}
    name = modelc_layers.ACTIVATION_ALIASES.get(value, value) if isinstance(value, str) else None
    if name not in modelc_layers.ACTIVATION_NAMES:
        raise o.refuse(key, value, "modelc's activations: " + ", ".join(modelc_layers.ACTIVATION_NAMES))
    return name, {}


def _initializer(o: Options, key: str, notes: list[str]) -> str | None:
    """A Keras initializer as modelc's name, or None (modelc's default, with a note) when modelc
    has no such one: it only matters when the converted spec is trained from scratch."""
    value = o.take(key, None)
    if value is None:
        return None
    if isinstance(value, str):
        class_name, config = value, {}
    elif isinstance(value, dict) and isinstance(value.get("class_name"), str):
        class_name, config = value["class_name"], dict(value.get("config") or {})
    else:
        raise o.refuse(key, value, "an initializer saved by Keras: a name or a serialized object")
    snake = keras_snake_case(class_name)
    name = INIT_ALIASES.get(snake, snake)
    config.pop("seed", None)
    options = {k: v for k, v in config.items() if v is not None}
    if name in INITIALIZERS and options == _RANDOM.get(snake, {}):
        return name
    notes.append(f"{o.what}: its {key} {class_name}{'(' + shown(options) + ')' if options else ''} has no "
                 "modelc equivalent; the spec uses modelc's default, which matters only when it is "
                 "trained from new weights")
    return None


def _dense(layer: KerasLayer, o: Options) -> Translated:
    notes: list[str] = []
    use_bias = o.require("use_bias", (True, False), "true or false", default=True)
    options = {"units": o.number("units", whole=True), "activation": activation(o), "use_bias": use_bias,
               "init": _initializer(o, "kernel_initializer", notes),
               "bias_init": _initializer(o, "bias_initializer", notes)}
    o.unset("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
            "bias_constraint", why=TRAINING_ONLY)
    o.unset("lora_rank", "quantization_config", why="modelc has no LoRA or quantized layers")
    o.drop("lora_alpha")
    return Translated("dense", options, ("kernel", "bias") if use_bias else ("kernel",), notes)


def _pair(o: Options, key: str, default=None) -> tuple[int, int]:
    value = o.take(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value)):
        raise o.refuse(key, value, f"'{key}' is a number or [height, width]")
    return tuple(value)


def _image_common(o: Options) -> None:
    o.require("data_format", ("channels_last", None), _CHANNELS_LAST, default=None)


def _padding(o: Options) -> str:
    return o.require("padding", ("valid", "same"), "modelc's padding: valid or same", default="valid")


def _conv2d(layer: KerasLayer, o: Options) -> Translated:
    notes: list[str] = []
    _image_common(o)
    o.require("dilation_rate", ((1, 1), 1), "modelc's convolutions are not dilated (dilation_rate=1)",
              default=1)
    o.require("groups", (1,), "modelc's convolutions have one group (groups=1)", default=1)
    use_bias = o.require("use_bias", (True, False), "true or false", default=True)
    options = {"filters": o.number("filters", whole=True), "kernel_size": _pair(o, "kernel_size"),
               "strides": _pair(o, "strides", 1), "padding": _padding(o), "activation": activation(o),
               "use_bias": use_bias, "init": _initializer(o, "kernel_initializer", notes),
               "bias_init": _initializer(o, "bias_initializer", notes)}
    o.unset("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
            "bias_constraint", why=TRAINING_ONLY)
    o.unset("lora_rank", why="modelc has no LoRA layers")
    o.drop("lora_alpha")
    return Translated("conv2d", options, ("kernel", "bias") if use_bias else ("kernel",), notes)


def _pooling(modelc_name: str):
    def entry(layer: KerasLayer, o: Options) -> Translated:
        _image_common(o)
        window = _pair(o, "pool_size", 2)
        strides = o.take("strides", None)
        options = {"pool_size": window, "padding": _padding(o),
                   "strides": None if strides is None else _pair(o, "strides", strides)}
        if options["strides"] == window:      # Keras writes the strides it defaulted to the window
            options["strides"] = None
        return Translated(modelc_name, options)
    return entry


def _global_pooling(modelc_name: str):
    def entry(layer: KerasLayer, o: Options) -> Translated:
        _image_common(o)
        return Translated(modelc_name, {"keepdims": o.require("keepdims", (True, False), "true or false",
                                                               default=False)})
    return entry


def _last_axis(layer: KerasLayer, o: Options, default=-1) -> None:
    """An option `axis` that must name the last axis (-1, or its index when the shape is known)."""
    axis = o.take("axis", default)
    rank = len(layer.input_shape) if layer.input_shape else None
    last = (-1, [-1]) + ((rank - 1, [rank - 1]) if rank else ())
    if axis not in last:
        raise o.refuse("axis", axis, "modelc normalizes and takes softmax over the last axis (axis=-1)")


def _normalization(o: Options, notes: list[str]) -> dict:
    for key, keras_default in (("beta_initializer", "Zeros"), ("gamma_initializer", "Ones"),
                               ("moving_mean_initializer", "Zeros"), ("moving_variance_initializer", "Ones")):
        value = o.take(key, None)
        name = value.get("class_name") if isinstance(value, dict) else value
        if value is not None and keras_snake_case(str(name)) != keras_snake_case(keras_default):
            notes.append(f"{o.what}: its {key} {shown(value)} is not Keras's default {keras_default}; "
                         "modelc starts from it only when trained from new weights")
    o.unset("beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint", why=TRAINING_ONLY)
    return {"epsilon": o.number("epsilon", 1e-3),
            "center": o.require("center", (True, False), "true or false", default=True),
            "scale": o.require("scale", (True, False), "true or false", default=True)}


def _affine_variables(options: dict) -> tuple[str, ...]:
    return (("gamma",) if options["scale"] else ()) + (("beta",) if options["center"] else ())


def _batch_normalization(layer: KerasLayer, o: Options) -> Translated:
    notes: list[str] = []
    _last_axis(layer, o)
    options = dict(_normalization(o, notes), momentum=o.number("momentum", 0.99))
    o.require("synchronized", (False,), "modelc trains on one device (synchronized=False)", default=False)
    o.require("renorm", (False,), "modelc has no batch renormalization (renorm=False)", default=False)
    o.drop("renorm_clipping", "renorm_momentum")       # read only with renorm=True
    return Translated("batch_normalization", options,
                      _affine_variables(options) + ("moving_mean", "moving_variance"), notes)


def _layer_normalization(layer: KerasLayer, o: Options) -> Translated:
    notes: list[str] = []
    _last_axis(layer, o)
    options = _normalization(o, notes)
    o.require("rms_scaling", (False,), "modelc's layer normalization subtracts the mean (rms_scaling=False)",
              default=False)
    return Translated("layer_normalization", options, _affine_variables(options), notes)


def _dropout(layer: KerasLayer, o: Options) -> Translated:
    o.unset("noise_shape", why="modelc drops each element on its own (noise_shape=None)")
    o.drop("seed")        # modelc keys its masks by the spec's seed
    return Translated("dropout", {"rate": o.number("rate")})


def _flatten(layer: KerasLayer, o: Options) -> Translated:
    _image_common(o)
    return Translated("flatten", {})


def _reshape(layer: KerasLayer, o: Options) -> Translated:
    shape = o.take("target_shape")
    if not (isinstance(shape, list) and shape and all(isinstance(d, int) for d in shape)):
        raise o.refuse("target_shape", shape, "a list of sizes")
    if -1 in shape:      # Keras writes the size it worked out only where the next layer was built
        made = layer.output_shape[1:] if layer.output_shape else None
        if not made or len(made) != len(shape) or any(d not in (-1, m) for d, m in zip(shape, made)):
            raise o.refuse("target_shape", shape, "modelc needs every size; write the -1 out")
        shape = list(made)
    return Translated("reshape", {"shape": tuple(shape)})


def _activation_layer(layer: KerasLayer, o: Options) -> Translated:
    name, options = activation(o)
    return Translated(name, options)


def _relu(layer: KerasLayer, o: Options) -> Translated:
    o.unset("max_value", why="modelc's relu has no upper bound (max_value=None)")
    o.require("threshold", (0, 0.0), "modelc's relu starts at 0 (threshold=0)", default=0.0)
    slope = o.number("negative_slope", 0.0)
    if slope == 0:
        return Translated("relu", {})
    return Translated("leaky_relu", {"negative_slope": slope})


def _with_option(name: str, keras_key: str, modelc_key: str, keras_default: float):
    """LeakyReLU(negative_slope), ELU(alpha): the activation with Keras's layer option."""
    def entry(layer: KerasLayer, o: Options) -> Translated:
        return Translated(name, {modelc_key: o.number(keras_key, keras_default)})
    return entry


def _softmax(layer: KerasLayer, o: Options) -> Translated:
    _last_axis(layer, o)
    return Translated("softmax", {})


def _identity(layer: KerasLayer, o: Options) -> Translated:
    return Translated("linear", {})


def _add(layer: KerasLayer, o: Options) -> Translated:
    return Translated("add", {})


def _concatenate(layer: KerasLayer, o: Options) -> Translated:
    return Translated("concat", {"axis": o.number("axis", -1, whole=True)})


LAYER_TABLE: dict[str, Callable[[KerasLayer, Options], Translated]] = {
    "Dense": _dense,
    "Dropout": _dropout,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Activation": _activation_layer,
    "ReLU": _relu,
    "LeakyReLU": _with_option("leaky_relu", "negative_slope", "negative_slope", 0.3),
    "ELU": _with_option("elu", "alpha", "alpha", 1.0),
    "Softmax": _softmax,
    "Identity": _identity,
    "Conv2D": _conv2d,
    "MaxPooling2D": _pooling("max_pooling2d"),
    "AveragePooling2D": _pooling("average_pooling2d"),
    "GlobalAveragePooling2D": _global_pooling("global_average_pooling2d"),
    "GlobalMaxPooling2D": _global_pooling("global_max_pooling2d"),
    "BatchNormalization": _batch_normalization,
    "LayerNormalization": _layer_normalization,
    "Add": _add,
    "Concatenate": _concatenate,
}
# Options every Keras layer has: its name (the spec's `=> name`), `trainable` and `dtype` (checked
# by `translate_layer`), and the ones Keras writes for masking or building that change nothing here.
_COMMON = ("name", "trainable", "dtype", "autocast", "input_dim", "input_shape", "batch_input_shape")


def translate_layer(layer: KerasLayer) -> Translated:
    """One Keras layer as a modelc layer call; what modelc lacks is a ModelcError naming it."""
    entry = LAYER_TABLE.get(layer.class_name)
    if entry is None:
        raise ModelcError(f"{layer.what}: modelc has no {layer.class_name} layer",
                          hint="modelc's Keras layers: " + ", ".join(LAYER_TABLE))
    o = Options(layer.what, layer.config, ignored=_COMMON)
    if layer.config.get("trainable", True) is not True:
        raise o.refuse("trainable", layer.config.get("trainable"),
                       "modelc trains every layer; set trainable=True in Keras and save again")
    check_dtype(o, layer.config.get("dtype"))
    translated = entry(layer, o)
    o.finish()
    translated.notes = translated.notes + o.notes
    return translated


def check_dtype(o: Options, dtype: Any) -> None:
    """A layer's dtype policy must be float32, modelc's only type."""
    name = dtype
    if isinstance(dtype, dict):
        name = (dtype.get("config") or {}).get("name")
    if name not in (None, "float32"):
        raise o.refuse("dtype", name, "modelc computes in float32; save the model with the float32 policy")
