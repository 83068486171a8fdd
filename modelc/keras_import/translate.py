"""A read `.keras` file as spec text and parameters: the network from the model's graph
(each layer through `layer_table`), the target, loss, optimizer and metrics from its compile
configuration, and each Keras variable under its modelc parameter name."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelc.compiler.catalog import LOSSES, METRICS, OPTIMIZERS, SCHEDULES
from modelc.compiler.layers import LAYERS
from modelc.errors import ModelcError
from modelc.keras_import import render
from modelc.keras_import.archive import WEIGHTS, KerasFile
from modelc.keras_import.compile_config import Training, read_training
from modelc.keras_import.graph import KerasGraph, Names, read_graph
from modelc.keras_import.layer_table import Translated, translate_layer


@dataclass
class Draft:
    """What the file says, before the spec is built: the pieces of spec text and the weights."""
    header: str
    model_name: str
    input_decl: str
    network: str
    output: str                        # the spec name of the model's output
    training: Training | None
    target_name: str
    weights: dict[str, tuple[str, np.ndarray]]    # modelc parameter -> (where it came from, the array)
    notes: list[str]


def draft(kf: KerasFile, name: str | None = None) -> Draft:
    graph = read_graph(kf.config)
    names = Names()
    input_name = names.add(graph.input_name)
    notes: list[str] = []
    translated: list[Translated] = []
    for node in graph.nodes:
        t = translate_layer(node.layer)
        translated.append(t)
        notes += t.notes
        names.add(node.layer.name)
    renamed = [f"'{k}' is '{s}'" for s, k in names.taken.items() if s != k]
    if renamed:
        notes.append("Keras names that are not spec names were changed: " + ", ".join(renamed))
    model_name = Names().add(name or graph.name)
    training = read_training(kf.config.get("compile_config"))
    if training:
        notes += training.notes
    target_name = names.add("y")
    return Draft(
        header=f"# Converted by modelc from-keras from {kf.filename} (Keras {kf.keras_version}).",
        model_name=model_name,
        input_decl=f"input  {input_name}: f32[{', '.join(str(d) for d in graph.input_shape)}]",
        network=_network(graph, names, translated), output=names.by_keras[graph.output],
        training=training, target_name=target_name,
        weights=_weights(kf, graph, names, translated), notes=notes)


def _network(graph: KerasGraph, names: Names, translated: list[Translated]) -> str:
    """The chains: a layer continues the chain of the value it reads when nothing else reads it."""
    uses: dict[str, int] = {graph.output: 1}
    for node in graph.nodes:
        for source in node.sources:
            uses[source] = uses.get(source, 0) + 1
    chains: list[tuple[str, list[tuple[str, str]]]] = []
    for node, t in zip(graph.nodes, translated):
        text = render.call(t.layer, t.options, LAYERS[t.layer].params)
        out = names.by_keras[node.layer.name]
        src = node.sources
        if chains and len(src) == 1 and uses[src[0]] == 1 and chains[-1][1][-1][1] == names.by_keras[src[0]]:
            chains[-1][1].append((text, out))
            continue
        if LAYERS[t.layer].merge != (len(src) > 1):
            raise ModelcError(f"{node.layer.what} reads {len(src)} value(s); modelc's {t.layer} takes "
                              + ("a tuple of two or more" if LAYERS[t.layer].merge else "one"))
        spec_src = [names.by_keras[s] for s in src]
        chains.append((spec_src[0] if len(src) == 1 else f"({', '.join(spec_src)})", [(text, out)]))
    lines = []
    for source, links in chains:
        width = max(len(text) for text, _ in links)
        for i, (text, out) in enumerate(links):
            lead = source if i == 0 else " " * len(source)
            lines.append(f"    {lead} -> {text.ljust(width)} => {out}")
    return "network {\n" + "\n".join(lines) + "\n}"


def _weights(kf: KerasFile, graph: KerasGraph, names: Names, translated: list[Translated]) -> dict:
    out = {}
    for node, t in zip(graph.nodes, translated):
        arrays = kf.weights.get(node.h5_path, [])
        where = f"{node.layer.what}"
        if len(arrays) != len(t.variables):
            expected = ", ".join(t.variables) or "none"
            raise ModelcError(f"{where}: the file's {WEIGHTS} holds {len(arrays)} variable(s) under "
                              f"'{node.h5_path}/vars', but the layer has {len(t.variables)} ({expected})",
                              hint="the file is damaged, or the layer keeps state modelc does not have")
        for i, (kind, array) in enumerate(zip(t.variables, arrays)):
            out[f"{names.by_keras[node.layer.name]}.{kind}"] = (f"{where} variable {i} ({kind})", array)
    return out


def target_decl(d: Draft, output_shape: tuple[int, ...]) -> str:
    """What the loss says the target is: class labels, one-hot rows, or values shaped as the output."""
    kind = d.training.loss_kind
    if kind == "sparse":
        return f"target {d.target_name}: int[] classes {output_shape[-1]}"
    if kind == "categorical":
        return f"target {d.target_name}: f32[{output_shape[-1]}] onehot"
    return f"target {d.target_name}: f32[{', '.join(str(n) for n in output_shape)}]"


def spec_text(d: Draft, output_shape: tuple[int, ...] | None) -> str:
    """The whole spec; with `output_shape` None (or no compile configuration) the network alone."""
    parts = [d.header, f"model {d.model_name}", ""]
    if d.training is None or output_shape is None:
        parts += [d.input_decl, "", d.network]
        if output_shape is not None:
            parts += ["", _untrained_template(d, output_shape)]
        return "\n".join(parts) + "\n"
    t = d.training
    loss_args = [d.target_name, d.output] + render.arguments(t.loss_options, LOSSES[t.loss].params)
    optimizer = render.call(t.optimizer, t.optimizer_options, OPTIMIZERS[t.optimizer].params, by_position=False)
    parts += [d.input_decl, target_decl(d, output_shape), "", d.network, "",
              f"loss      {t.loss}({', '.join(loss_args)})", f"optimizer {optimizer}"]
    if t.metrics:
        parts.append("metrics   " + ", ".join(render.call(m, o, METRICS[m].params, by_position=False)
                                              for m, o in t.metrics))
    parts += ["", "train {", "    # data, batch and epochs are not kept in a .keras file: name them here,",
              '    # for example: data npz("train.npz", x="x", y="y")']
    if t.schedule:
        name, options = t.schedule
        parts.append(f"    schedule {render.call(name, options, SCHEDULES[name], by_position=False)}")
    parts.append("}")
    return "\n".join(parts) + "\n"


def _untrained_template(d: Draft, output_shape: tuple[int, ...]) -> str:
    dims = ", ".join(str(n) for n in output_shape)
    return "\n".join([
        "# The Keras model was saved without compile(), so it has no loss or optimizer here.",
        "# To train it, declare a target and name them, for example:",
        f"# target {d.target_name}: f32[{dims}]",
        f"# loss      mean_squared_error({d.target_name}, {d.output})",
        "# optimizer adam(lr=0.001)",
        '# train { data npz("train.npz", x="x", y="y")  batch 32  epochs 10 }'])
