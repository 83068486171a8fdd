"""The layers a network may use: each declares its options once, builds IR, and carries
the facts the builder and the summary read (its Keras class name, and which activation
its output ends in, for the loss checks).

A layer's `build(ctx, inputs, options, layer)` emits primitives through `ctx.emit`,
creates its parameters through `ctx.param`, and returns its output Value.
Every activation is also a layer of its own name (`-> relu`, `-> softmax(temperature=0.6)`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from modelc.compiler import elementwise
from modelc.compiler.catalog import INIT_ALIASES, INITIALIZERS
from modelc.errors import SpecError, unknown
from modelc.grammar import ast
from modelc.schema import Param, bind_call

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


def _bind_dense(call: ast.Call) -> dict:
    """dense's activation may be a plain name or a call such as softmax(temperature=0.6)."""
    activation = None
    plain_args = []
    for i, arg in enumerate(call.args):
        is_activation = (arg.key is None and i == 1) or (arg.key is not None and arg.key.name == "activation")
        if is_activation:
            if not isinstance(arg.value, (ast.Ident, ast.Call)):
                raise SpecError("dense: 'activation' must be an activation such as relu or softmax",
                                arg.pos)
            activation = activation_options(arg.value)
        else:
            plain_args.append(arg)
    if activation is None:
        activation = ("linear", {})
    positional = [a for a in plain_args if a.key is None]
    if len(positional) > 1:
        raise SpecError("dense takes at most 2 positional arguments (units, activation)", positional[1].pos)
    params = tuple(p for p in LAYERS["dense"].params if p.name != "activation")
    opts = bind_call(ast.Call(call.name, plain_args, call.pos), params, what="dense")
    opts["act"] = activation
    return opts


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
             activation="act", bind=_bind_dense),
    LayerDef("flatten", (), _flatten, "Flatten", keeps_kind=True),
    LayerDef("reshape", (Param("shape", "ints"),), _reshape, "Reshape", keeps_kind=True),
    LayerDef("dropout", (Param("rate", "float", low=0.0, high=1.0, doc="rate"),), _dropout, "Dropout",
             keeps_kind=True),
    LayerDef("add", (), _add, "Add", merge=True),
    LayerDef("concat", (Param("axis", "int", -1),), _concat, "Concatenate", merge=True),
] + [_activation_layer(name) for name in ACTIVATION_NAMES]}
LAYER_ALIASES = {"linear_layer": "dense", "concatenate": "concat", "fully_connected": "dense"}


def bind_layer(call: ast.Call) -> tuple[LayerDef, dict]:
    """Resolve a layer call (an activation is a layer too) to its definition and its options."""
    name = LAYER_ALIASES.get(call.name.name, call.name.name)
    name = ACTIVATION_ALIASES.get(name, name)
    if name not in LAYERS:
        raise unknown("layer", call.name.name, list(LAYERS) + list(LAYER_ALIASES), call.name.pos)
    definition = LAYERS[name]
    if definition.bind is not None:
        return definition, definition.bind(call)
    return definition, bind_call(call, definition.params, what=name)
