"""The layers a network may use: each declares its options once, builds IR, and carries
the facts the builder and the summary read (its Keras class name, and which activation
its output ends in, for the loss checks).

A layer's `build(ctx, inputs, options, layer)` emits primitives through `ctx.emit`,
creates its parameters through `ctx.param`, and returns its output Value.
Every activation is also a layer of its own name (`-> relu`, `-> softmax(temperature=0.6)`).
"""
from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Callable

from modelc.compiler import elementwise
from modelc.compiler.catalog import INIT_ALIASES, INITIALIZERS
from modelc.errors import SpecError, unknown
from modelc.grammar import ast
from modelc.compiler.image_primitives import same_pads
from modelc.schema import REQUIRED, Param, bind_call

ACTIVATION_NAMES = tuple(elementwise.ACTIVATIONS) + ("softmax", "log_softmax")
ACTIVATION_ALIASES = dict(elementwise.ACTIVATION_ALIASES)


@dataclass(frozen=True)
class LayerDef:
    """A layer: its options, how it builds IR, and what the builder and the summary know of it."""
    name: str
    params: tuple[Param, ...]
    build: Callable
    type: str                      # its class in the summary, as Keras names it: "Dense"
    merge: bool = False            # takes a tuple of inputs (add, concat)
    keeps_kind: bool = False       # only moves values: its output ends in the activation its input ends in
    activation: str | None = None  # the option holding the activation its output ends in: (name, options)
    bind: Callable | None = None   # reads its options from the call itself, instead of by `params`


def _init_param(name, default):
    return Param(name, "name", default, choices=tuple(INITIALIZERS), aliases=INIT_ALIASES,
                 doc="initializer")


def activation_options(call: ast.Call | ast.Ident) -> tuple[str, dict]:
    """`relu`, `softmax(temperature=0.6)`, `leaky_relu(negative_slope=0.1)` -> (name, options)."""
    if isinstance(call, ast.Ident):
        call = ast.Call(call, [], call.pos)
    name = ACTIVATION_ALIASES.get(call.name.name, call.name.name)
    if name not in ACTIVATION_NAMES:
        raise unknown("activation", call.name.name, list(ACTIVATION_NAMES) + list(ACTIVATION_ALIASES),
                      call.name.pos)
    return name, bind_call(call, _activation_params(name), what=name)


def _activation_params(name: str) -> tuple[Param, ...]:
    if name in ("softmax", "log_softmax"):
        return (Param("temperature", "float", 1.0, low=0.0, low_open=True),)
    return tuple(Param(k, "float", v) for k, v in elementwise.ACTIVATIONS[name].params.items())


def apply_activation(ctx, x, name: str, options: dict, layer: str):
    if name == "linear":
        return x
    if name in ("softmax", "log_softmax"):
        if x.shape[-1] == 1 and name == "softmax":
            raise SpecError(f"softmax over a single unit always outputs 1.0", ctx.emit.loc,
                            hint="use sigmoid for one output unit, or give the layer 2 or more units")
        return ctx.emit(name, x, name=layer, temperature=options["temperature"])
    return ctx.emit("act", x, name=layer, fn=name, **options)


def _dense(ctx, inputs, opts, layer):
    (x,) = inputs
    if x.rank != 2:
        raise SpecError(f"dense needs one feature axis, but its input has shape {list(x.shape[1:])}",
                        ctx.emit.loc, hint="add '-> flatten' before it")
    units = opts["units"]
    kernel = ctx.param(layer, "kernel", (x.shape[1], units), opts["init"], x.shape[1], units)
    linear = opts["act"][0] == "linear"
    z = ctx.emit("matmul", x, kernel, name=layer if linear and not opts["use_bias"] else f"{layer}.matmul")
    if opts["use_bias"]:
        bias = ctx.param(layer, "bias", (units,), opts["bias_init"], x.shape[1], units)
        z = ctx.emit("bias_add", z, bias, name=layer if linear else f"{layer}.z")
    return apply_activation(ctx, z, opts["act"][0], opts["act"][1], layer)


def _flatten(ctx, inputs, opts, layer):
    (x,) = inputs
    if x.rank == 2:
        return x
    return ctx.emit("reshape", x, name=layer, shape=(x.sample_size(),))


def _reshape(ctx, inputs, opts, layer):
    return ctx.emit("reshape", inputs[0], name=layer, shape=opts["shape"])


def _dropout(ctx, inputs, opts, layer):
    (x,) = inputs
    if not ctx.training or opts["rate"] == 0:
        return x
    return ctx.emit.emit_op("dropout", (x, ctx.step), {"rate": opts["rate"], "seed": ctx.dropout_seed(layer)},
                       name=layer).outputs[0]


def _add(ctx, inputs, opts, layer):
    return ctx.emit("add", *inputs, name=layer)


def _concat(ctx, inputs, opts, layer):
    rank = inputs[0].rank
    axis = opts["axis"]
    if not -rank < axis < rank or axis == 0 or axis == -rank:
        raise SpecError(f"concat axis {axis} is out of range for inputs of rank {rank - 1} "
                        "(the batch axis cannot be joined)", ctx.emit.loc,
                        hint="use axis=-1 to join features")
    return ctx.emit("concat", *inputs, name=layer, axis=axis % rank)


def _binds_activation(layer: str, position: int):
    """The binder of a layer whose activation may be a plain name or a call such as
    softmax(temperature=0.6): given by keyword or as positional argument `position`."""
    def bind(call: ast.Call) -> dict:
        activation = None
        plain_args = []
        for i, arg in enumerate(call.args):
            is_activation = (arg.key is None and i == position) or (
                arg.key is not None and arg.key.name == "activation")
            if is_activation:
                if not isinstance(arg.value, (ast.Ident, ast.Call)):
                    raise SpecError(f"{layer}: 'activation' must be an activation such as relu or softmax",
                                    arg.pos)
                activation = activation_options(arg.value)
            else:
                plain_args.append(arg)
        positional = [a for a in plain_args if a.key is None]
        if len(positional) > position:
            names = ", ".join(p.name for p in LAYERS[layer].params[:position]) + ", activation"
            raise SpecError(f"{layer} takes at most {position + 1} positional arguments ({names})",
                            positional[position].pos)
        params = tuple(p for p in LAYERS[layer].params if p.name != "activation")
        opts = bind_call(ast.Call(call.name, plain_args, call.pos), params, what=layer)
        opts["act"] = activation or ("linear", {})
        return opts
    return bind


# ---------------------------------------------------------------- images (NHWC, as Keras)

def _image_input(ctx, x, layer_kind: str):
    """The input of an image layer must be [height, width, channels]."""
    if x.rank == 4:
        return x.shape[1], x.shape[2], x.shape[3]
    dims = list(x.shape[1:])
    if x.rank == 3:
        fix = (f"declare f32[{dims[0]}, {dims[1]}, 1]" if x.role == "input"
               else f"add '-> reshape([{dims[0]}, {dims[1]}, 1])' before it")
    else:
        fix = "reshape the features to [height, width, channels] before it"
    raise SpecError(f"{layer_kind} needs [height, width, channels], but its input has shape {dims}",
                    ctx.emit.loc, hint=fix)


def _geometry(ctx, layer_kind, what, hw, window, strides, padding):
    """Keras's padding resolved to explicit pads, with the mistakes that give no output."""
    if padding == "same":
        pads = same_pads(hw[0], window[0], strides[0]) + same_pads(hw[1], window[1], strides[1])
    else:
        pads = (0, 0, 0, 0)
        if window[0] > hw[0] or window[1] > hw[1]:
            raise SpecError(f"{layer_kind}: its {window[0]}x{window[1]} {what} is larger than its "
                            f"{hw[0]}x{hw[1]} input", ctx.emit.loc,
                            hint="use padding=same, a smaller window, or fewer downsampling layers before it")
    return {"strides": tuple(strides), "pads": pads}


def _conv2d(ctx, inputs, opts, layer):
    (x,) = inputs
    h, w, c = _image_input(ctx, x, "conv2d")
    kh, kw = opts["kernel_size"]
    geometry = _geometry(ctx, "conv2d", "kernel", (h, w), (kh, kw), opts["strides"], opts["padding"])
    filters = opts["filters"]
    fan_in, fan_out = kh * kw * c, kh * kw * filters      # Keras's fans for a convolution kernel
    kernel = ctx.param(layer, "kernel", (kh, kw, c, filters), opts["init"], fan_in, fan_out)
    linear = opts["act"][0] == "linear"
    z = ctx.emit("conv2d", x, kernel, name=layer if linear and not opts["use_bias"] else f"{layer}.conv",
                 **geometry)
    if opts["use_bias"]:
        bias = ctx.param(layer, "bias", (filters,), opts["bias_init"], fan_in, fan_out)
        z = ctx.emit("bias_add", z, bias, name=layer if linear else f"{layer}.z")
    return apply_activation(ctx, z, opts["act"][0], opts["act"][1], layer)


def _pooling(prim: str, kind: str):
    def build(ctx, inputs, opts, layer):
        (x,) = inputs
        h, w, _ = _image_input(ctx, x, kind)
        window = opts["pool_size"]
        strides = opts["strides"] or window
        geometry = _geometry(ctx, kind, "pooling window", (h, w), window, strides, opts["padding"])
        return ctx.emit(prim, x, name=layer, window=tuple(window), **geometry)
    return build


def _global_pooling(prim: str, kind: str):
    def build(ctx, inputs, opts, layer):
        (x,) = inputs
        h, w, c = _image_input(ctx, x, kind)
        pooled = ctx.emit(prim, x, name=layer if opts["keepdims"] else f"{layer}.pool", window=(h, w),
                          strides=(h, w), pads=(0, 0, 0, 0))
        return pooled if opts["keepdims"] else ctx.emit("reshape", pooled, name=layer, shape=(c,))
    return build


def _affine(ctx, channels, opts, layer):
    """A normalization's gamma (scale) and beta (center), each None when switched off;
    made before anything else of the layer, in Keras's order of weights."""
    gamma = ctx.param(layer, "gamma", (channels,), "ones", channels, channels) if opts["scale"] else None
    beta = ctx.param(layer, "beta", (channels,), "zeros", channels, channels) if opts["center"] else None
    return gamma, beta


def _normalized_name(layer, gamma, beta):
    return layer if gamma is None and beta is None else f"{layer}.normalized"


def _scale_and_center(ctx, xhat, gamma, beta, layer):
    y = xhat
    if gamma is not None:
        y = ctx.emit("scale_last", y, gamma, name=layer if beta is None else f"{layer}.scaled")
    if beta is not None:
        y = ctx.emit("bias_add", y, beta, name=layer)
    return y


def _batch_normalization(ctx, inputs, opts, layer):
    """Keras's BatchNormalization over the last axis: batch statistics while training (and
    the moving ones updated from them), the moving statistics at inference."""
    (x,) = inputs
    channels = x.shape[-1]
    gamma, beta = _affine(ctx, channels, opts, layer)
    moving_mean = ctx.param(layer, "moving_mean", (channels,), "zeros", channels, channels, trainable=False)
    moving_var = ctx.param(layer, "moving_variance", (channels,), "ones", channels, channels, trainable=False)
    name = _normalized_name(layer, gamma, beta)
    if ctx.training:
        xhat, mean, var = ctx.emit.emit_op("batch_normalize", (x,), {"epsilon": opts["epsilon"]},
                                           name=name).outputs
        for moving, stat in ((moving_mean, mean), (moving_var, var)):
            ctx.emit.emit_op("moving_average", (moving, stat), {"momentum": opts["momentum"]}, writes=(moving,))
    else:
        xhat = ctx.emit("normalize", x, moving_mean, moving_var, name=name, epsilon=opts["epsilon"])
    return _scale_and_center(ctx, xhat, gamma, beta, layer)


def _layer_normalization(ctx, inputs, opts, layer):
    """Keras's LayerNormalization over the last axis."""
    (x,) = inputs
    gamma, beta = _affine(ctx, x.shape[-1], opts, layer)
    xhat = ctx.emit.emit_op("layer_normalize", (x,), {"epsilon": opts["epsilon"]},
                            name=_normalized_name(layer, gamma, beta)).outputs[0]
    return _scale_and_center(ctx, xhat, gamma, beta, layer)


def _pair(name, default=REQUIRED):
    return Param(name, "pair", default, low=1, doc=name)


_PADDING = Param("padding", "name", "valid", choices=("valid", "same"), doc="padding")
_POOLING = (_pair("pool_size", (2, 2)), Param("strides", "pair", None, low=1), _PADDING)
_NORMALIZATION = (Param("epsilon", "float", 0.001, low=0.0, low_open=True),
                  Param("center", "bool", True), Param("scale", "bool", True))
IMAGE_LAYERS = [
    LayerDef("conv2d", (Param("filters", "int", low=1, doc="filters"), _pair("kernel_size"),
                        Param("activation", "name", "linear"),      # resolved by activation_options
                        _pair("strides", (1, 1)), _PADDING, Param("use_bias", "bool", True),
                        _init_param("init", "glorot_uniform"), _init_param("bias_init", "zeros")),
             _conv2d, "Conv2D", activation="act", bind=_binds_activation("conv2d", 2)),
    LayerDef("max_pooling2d", _POOLING, _pooling("max_pool", "max_pooling2d"), "MaxPooling2D", keeps_kind=True),
    LayerDef("average_pooling2d", _POOLING, _pooling("avg_pool", "average_pooling2d"), "AveragePooling2D"),
    LayerDef("global_average_pooling2d", (Param("keepdims", "bool", False),),
             _global_pooling("avg_pool", "global_average_pooling2d"), "GlobalAveragePooling2D"),
    LayerDef("global_max_pooling2d", (Param("keepdims", "bool", False),),
             _global_pooling("max_pool", "global_max_pooling2d"), "GlobalMaxPooling2D", keeps_kind=True),
    LayerDef("batch_normalization", (Param("momentum", "float", 0.99, low=0.0, high=1.0),) + _NORMALIZATION,
             _batch_normalization, "BatchNormalization"),
    LayerDef("layer_normalization", _NORMALIZATION, _layer_normalization, "LayerNormalization"),
]


_ACTIVATION_TYPES = {"softmax": "Softmax", "log_softmax": "LogSoftmax"}     # the others: "Activation"


def _activation_layer(name: str) -> LayerDef:
    """`-> relu`, `-> softmax(temperature=0.6)`: an activation as a layer of its own."""
    def build(ctx, inputs, opts, layer):
        return apply_activation(ctx, inputs[0], *opts["act"], layer)

    def bind(call):
        return {"act": activation_options(call)}

    return LayerDef(name, _activation_params(name), build, _ACTIVATION_TYPES.get(name, "Activation"),
                    activation="act", bind=bind)


LAYERS: dict[str, LayerDef] = {d.name: d for d in [
    LayerDef("dense", (Param("units", "int", low=1, doc="units"),
                       Param("activation", "name", "linear"),     # resolved by activation_options
                       _init_param("init", "glorot_uniform"),
                       _init_param("bias_init", "zeros"),
                       Param("use_bias", "bool", True)), _dense, "Dense",
             activation="act", bind=_binds_activation("dense", 1)),
    LayerDef("flatten", (), _flatten, "Flatten", keeps_kind=True),
    LayerDef("reshape", (Param("shape", "ints"),), _reshape, "Reshape", keeps_kind=True),
    LayerDef("dropout", (Param("rate", "float", low=0.0, high=1.0, doc="rate"),), _dropout, "Dropout",
             keeps_kind=True),
    LayerDef("add", (), _add, "Add", merge=True),
    LayerDef("concat", (Param("axis", "int", -1),), _concat, "Concatenate", merge=True),
] + list(IMAGE_LAYERS) + [_activation_layer(name) for name in ACTIVATION_NAMES]}
LAYER_ALIASES = {"linear_layer": "dense", "concatenate": "concat", "fully_connected": "dense",
                 "convolution2d": "conv2d", "conv_2d": "conv2d",
                 "max_pool2d": "max_pooling2d", "maxpool2d": "max_pooling2d", "max_pool": "max_pooling2d",
                 "maxpooling2d": "max_pooling2d", "max_pool_2d": "max_pooling2d",
                 "avg_pool2d": "average_pooling2d", "avgpool2d": "average_pooling2d",
                 "average_pool2d": "average_pooling2d", "avg_pooling2d": "average_pooling2d",
                 "global_avg_pool2d": "global_average_pooling2d", "global_avg_pooling2d": "global_average_pooling2d",
                 "global_average_pool2d": "global_average_pooling2d", "global_max_pool2d": "global_max_pooling2d",
                 "batchnorm": "batch_normalization", "batch_norm": "batch_normalization",
                 "batch_normalisation": "batch_normalization", "layernorm": "layer_normalization",
                 "layer_norm": "layer_normalization", "layer_normalisation": "layer_normalization"}


def keras_snake_case(class_name: str) -> str:
    """Keras's `naming.to_snake_case`, the one rule from a class name to a layer's name (and to its
    group in a .keras weights file): MaxPooling2D -> max_pooling2d, Conv2D -> conv2d."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def bind_layer(call: ast.Call) -> tuple[LayerDef, dict]:
    """Resolve a layer call (an activation is a layer too) to its definition and its options."""
    name = call.name.name
    if name not in LAYERS and name not in LAYER_ALIASES and name not in ACTIVATION_ALIASES:
        name = keras_snake_case(name)
    name = LAYER_ALIASES.get(name, name)
    name = ACTIVATION_ALIASES.get(name, name)
    if name not in LAYERS:
        raise unknown("layer", call.name.name, list(LAYERS) + list(LAYER_ALIASES), call.name.pos)
    definition = LAYERS[name]
    if definition.bind is not None:
        return definition, definition.bind(call)
    return definition, bind_call(call, definition.params, what=name)
