"""A Keras model's config as a list of layer calls: its input, each layer with the values it
reads, and its output, for a Sequential model (a list of layers) or a functional one (layers
with `inbound_nodes` whose `__keras_tensor__` arguments name the layer that made them in
`keras_history`). What modelc cannot train (several inputs or outputs, a model inside a
model, a layer called twice) is a ModelcError naming it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from modelc.errors import ModelcError
from modelc.compiler.layers import keras_snake_case
from modelc.keras_import.layer_table import KerasLayer, Options
from modelc.keras_import.options import shown

MODELS = ("Sequential", "Functional", "Model")


@dataclass
class Node:
    layer: KerasLayer
    sources: list[str]           # the Keras names of the layers (or the input) it reads
    h5_path: str                 # where the weights file keeps its variables


@dataclass
class KerasGraph:
    name: str                    # the model's name
    input_name: str
    input_shape: tuple[int, ...]  # one sample's
    nodes: list[Node]
    output: str                  # the Keras name of the layer whose output the model gives


class Names:
    """Keras names as spec names: letters, digits and underscores, not starting with a digit,
    each one unique."""

    def __init__(self):
        self.taken: dict[str, str] = {}      # spec name -> the Keras name it stands for
        self.by_keras: dict[str, str] = {}

    def add(self, keras_name: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", keras_name) or "layer"
        if base[0].isdigit():
            base = "_" + base
        name, n = base, 1
        while name in self.taken:
            n += 1
            name = f"{base}_{n}"
        self.taken[name] = keras_name
        self.by_keras[keras_name] = name
        return name


def _layer(entry: dict, where: str) -> KerasLayer:
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        raise ModelcError(f"{where} is not a Keras layer: {shown(entry)}", hint="the file is damaged")
    config = entry.get("config")
    name = (config or {}).get("name") if isinstance(config, dict) else None
    name = entry.get("name", name)
    if not isinstance(name, str):
        raise ModelcError(f"{where} ({entry['class_name']}) has no name", hint="the file is damaged")
    if entry["class_name"] in MODELS:
        raise ModelcError(f"layer '{name}' is a {entry['class_name']} model inside the model; modelc converts "
                          "one flat model", hint="rebuild the model with the inner model's layers in place "
                                                 "of the inner model, and save it again")
    build = entry.get("build_config") or {}
    shape = build.get("input_shape") if isinstance(build, dict) else None
    shape = tuple(shape) if isinstance(shape, list) and all(isinstance(d, (int, type(None))) for d in shape) \
        else None
    return KerasLayer(name, entry["class_name"], config, shape)


def _input(layer: KerasLayer) -> tuple[int, ...]:
    o = Options(layer.what, layer.config, ignored=("name",))
    shape = o.take("batch_shape", None) or o.take("batch_input_shape", None)
    if not isinstance(shape, list) or len(shape) < 2:
        raise o.refuse("batch_shape", shape, "an input with a batch axis and a known sample shape")
    sample = shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in sample):
        raise o.refuse("batch_shape", shape, "modelc needs every size of a sample known; give the Input a "
                                             "fixed shape such as keras.Input((28, 28, 1))")
    o.require("dtype", ("float32", None), "modelc's inputs are float32", default=None)
    o.require("sparse", (False,), "modelc's inputs are dense arrays", default=False)
    o.require("ragged", (False,), "modelc's inputs are dense arrays", default=False)
    o.require("optional", (False,), "modelc's input is always given", default=False)
    o.drop("input_tensor")
    o.finish()
    return tuple(sample)


def read_graph(config: dict) -> KerasGraph:
    class_name = config.get("class_name")
    inner = config.get("config")
    if class_name not in MODELS or not isinstance(inner, dict) or not isinstance(inner.get("layers"), list):
        raise ModelcError(f"the model is a {class_name}, not a Sequential or functional model",
                          hint="modelc converts Sequential and functional Keras models; a subclassed "
                               "model's config does not say what its call() computes")
    name = inner.get("name") if isinstance(inner.get("name"), str) else "model"
    layers = [_layer(entry, f"layer {i} of the model") for i, entry in enumerate(inner["layers"])]
    paths = _h5_paths(layers)
    if class_name == "Sequential":
        return _sequential(name, config, inner, layers, paths)
    return _functional(name, inner, layers, paths)


def _h5_paths(layers: list[KerasLayer]) -> list[str]:
    """Each layer's group in the weights file: its snake-cased class name, counted per name."""
    used: dict[str, int] = {}
    out = []
    for layer in layers:
        base = keras_snake_case(layer.class_name)
        used[base] = used.get(base, -1) + 1
        out.append(f"layers/{base}" + (f"_{used[base]}" if used[base] else ""))
    return out


def _sequential(name, config, inner, layers, paths) -> KerasGraph:
    if layers and layers[0].class_name == "InputLayer":
        input_name, shape = layers[0].name, _input(layers[0])
        layers, paths = layers[1:], paths[1:]
    else:
        built = inner.get("build_input_shape") or (config.get("build_config") or {}).get("input_shape")
        if not isinstance(built, list) or not all(isinstance(d, int) and d > 0 for d in built[1:]) or len(built) < 2:
            raise ModelcError(f"the Sequential model '{name}' was saved without its input shape",
                              hint="start the model with keras.Input(shape) and save it again")
        input_name, shape = "input", tuple(built[1:])
    if not layers:
        raise ModelcError(f"the Sequential model '{name}' has no layers")
    nodes, previous = [], input_name
    for layer, path in zip(layers, paths):
        if layer.class_name == "InputLayer":
            raise ModelcError(f"{layer.what} stands inside the Sequential model; modelc reads one input first")
        nodes.append(Node(layer, [previous], path))
        previous = layer.name
    for node, after in zip(nodes, nodes[1:]):
        node.layer.output_shape = after.layer.input_shape
    return KerasGraph(name, input_name, shape, nodes, previous)


def _one_tensor(value, what: str, kind: str) -> list:
    """`input_layers`/`output_layers`: one [name, node, index] (or a list holding one)."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        return value
    if isinstance(value, list) and len(value) == 1:
        return _one_tensor(value[0], what, kind)
    count = len(value) if isinstance(value, (list, dict)) else "an unknown number of"
    raise ModelcError(f"the model '{what}' has {count} {kind}s; modelc converts models with one input and "
                      "one output", hint=f"give the model one {kind} (concatenate the features into one)")


def _functional(name, inner, layers, paths) -> KerasGraph:
    (input_name, _, _) = _one_tensor(inner.get("input_layers"), name, "input")
    (output, _, _) = _one_tensor(inner.get("output_layers"), name, "output")
    nodes, shape, known = [], None, set()
    made: dict[str, tuple] = {}           # a layer's output shape, as the layers reading it say
    for entry, layer, path in zip(inner["layers"], layers, paths):
        if layer.class_name == "InputLayer":
            if layer.name != input_name:
                raise ModelcError(f"the model '{name}' has a second input '{layer.name}'; modelc converts "
                                  "models with one input")
            shape = _input(layer)
            known.add(layer.name)
            continue
        sources = _inbound(entry, layer, known, made)
        nodes.append(Node(layer, sources, path))
        known.add(layer.name)
    if shape is None:
        raise ModelcError(f"the model '{name}' has no InputLayer named '{input_name}'", hint="the file is damaged")
    if output not in known:
        raise ModelcError(f"the model '{name}' gives the output of '{output}', which it does not have",
                          hint="the file is damaged")
    for node in nodes:
        node.layer.output_shape = made.get(node.layer.name)
    return KerasGraph(name, input_name, shape, nodes, output)


def _inbound(entry: dict, layer: KerasLayer, known: set[str], made: dict[str, tuple]) -> list[str]:
    nodes = entry.get("inbound_nodes")
    if not isinstance(nodes, list) or not nodes:
        raise ModelcError(f"{layer.what} is not called in the model", hint="the file is damaged")
    if len(nodes) > 1:
        raise ModelcError(f"{layer.what} is called {len(nodes)} times (a shared layer); modelc's layers "
                          "are each called once", hint="give each call its own layer")
    node = nodes[0]
    if not isinstance(node, dict) or not isinstance(node.get("args"), list):
        raise ModelcError(f"{layer.what}: its inbound node {shown(node)} is not Keras 3's format",
                          hint="save the model again with Keras 3")
    for key, value in (node.get("kwargs") or {}).items():
        # Keras records `training` on Dropout and BatchNormalization calls (false when the graph was
        # built), but fit and predict pass their own, which replaces it (functional.operation_fn).
        if key == "training" and isinstance(value, bool):
            continue
        if value is not None:
            raise ModelcError(f"{layer.what} is called with {key}={shown(value)}; modelc cannot express it",
                              hint="call the layer on its input alone")
    if len(node["args"]) != 1:
        raise ModelcError(f"{layer.what} is called with {len(node['args'])} positional arguments; modelc's "
                          "layers take one value or one list of values")
    arg = node["args"][0]
    tensors = arg if isinstance(arg, list) else [arg]
    sources = []
    for tensor in tensors:
        history = (tensor.get("config") or {}).get("keras_history") if isinstance(tensor, dict) else None
        if not (isinstance(tensor, dict) and tensor.get("class_name") == "__keras_tensor__"
                and isinstance(history, list) and len(history) == 3 and history[0] in known):
            raise ModelcError(f"{layer.what} reads {shown(tensor)}, which is not the output of a layer "
                              "before it", hint="modelc converts graphs of Keras layers; a value made by "
                                                "a keras.ops call or a constant has no modelc layer")
        if history[1:] != [0, 0]:
            raise ModelcError(f"{layer.what} reads output {history[2]} of call {history[1]} of "
                              f"'{history[0]}'; modelc's layers have one call and one output")
        shape = tensor["config"].get("shape")
        if isinstance(shape, list) and all(isinstance(d, (int, type(None))) for d in shape):
            made[history[0]] = tuple(shape)
        sources.append(history[0])
    return sources
