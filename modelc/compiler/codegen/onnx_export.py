"""The `onnx` target: a network's inference graph (`program.predict`) as an ONNX model.

It is one more code generator: each IR primitive is lowered by its rule in
`onnx_rules.RULES` (activations from their own expressions), and a primitive
without one is refused by name. The model takes the input as `modelc predict`
does, in modelc's layout (NHWC images) with a symbolic batch axis "batch", and
gives the prediction in modelc's layout; inside, images are channels first
between the convolutions (see `onnx_rules`). It is checked with
`onnx.checker.check_model(full_check=True)` before it is written, atomically.
"""
from __future__ import annotations

import os

import numpy as np

from modelc import __version__
from modelc.compiler.ir import BATCH, Graph
from modelc.errors import ModelcError
from modelc.extras import require
from modelc.files import atomic_write

MIN_OPSET = 13        # from opset 13 on, Softmax and LogSoftmax normalize one axis (before: flattened ones)
# The newest opset of onnx 1.23, which onnxruntime 1.32 runs (the versions of the `onnx` extra,
# against which every opset here is tested); newer opsets may change an operator this file emits.
MAX_OPSET = 28
DEFAULT_OPSET = 17    # run by onnxruntime 1.13 and later, and by most other ONNX runtimes
BATCH_AXIS = "batch"  # the name of the symbolic batch dimension of the input and the output
# protobuf refuses a message of 2 GiB or more: weights beyond that would need ONNX's external data
MAX_MODEL_BYTES = 2 ** 31 - 1


def check_opset(opset: int | None) -> int:
    """The opset to emit: `DEFAULT_OPSET`, or `opset` when it is in MIN_OPSET..MAX_OPSET."""
    if opset is None:
        return DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelcError(f"ONNX opset {opset!r} is not supported; modelc exports opsets {MIN_OPSET} to "
                          f"{MAX_OPSET}", hint=f"leave the opset out for {DEFAULT_OPSET}, or choose one in "
                                               f"{MIN_OPSET}..{MAX_OPSET}")
    return int(opset)


def _require_onnx(opset: int):
    """The onnx package (the `onnx` extra's), if it is installed and knows `opset`."""
    require("onnx", "exporting to ONNX", ("onnx",))
    import onnx
    known = onnx.defs.onnx_opset_version()
    if opset > known:
        raise ModelcError(f"the installed onnx {onnx.__version__} knows opsets up to {known}, not {opset}",
                          hint=f"choose an opset up to {known}, or upgrade the onnx package")
    return onnx


def _check_weights(graph: Graph, params: dict) -> None:
    """Every weight the graph reads, with its shape, in at most `MAX_MODEL_BYTES`."""
    total = 0
    for value in graph.params:
        if value.name not in params:
            raise ModelcError(f"ONNX export: the weight '{value.name}' is missing",
                              hint="pass every weight of the model (Model.named_weights() gives them)")
        shape = tuple(np.shape(params[value.name]))
        if shape != tuple(value.shape):
            raise ModelcError(f"ONNX export: the weight '{value.name}' has shape {list(shape)}, but the "
                              f"model needs {list(value.shape)}")
        total += 4 * int(np.prod(shape))
    if total > MAX_MODEL_BYTES:
        raise ModelcError(f"the model's weights take {total:,} bytes, but one ONNX file holds at most "
                          f"{MAX_MODEL_BYTES:,}", hint="export a smaller model")


def _dims(shape) -> list:
    return [BATCH_AXIS if d == BATCH else d for d in shape]


def _prune(nodes: list, initializers: list, outputs: set[str]) -> tuple[list, list]:
    """The nodes and initializers the outputs depend on (a rule may make a value nobody reads,
    such as layer normalization's variance)."""
    needed, kept = set(outputs), []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    return kept[::-1], [t for t in initializers if t.name in needed]


def to_onnx(program, params: dict[str, np.ndarray], opset: int | None = None):
    """`program`'s inference graph as an `onnx.ModelProto` (checked), with `params` (weight name ->
    array) as its initializers."""
    opset = check_opset(opset)
    onnx = _require_onnx(opset)
    from onnx import helper
    from modelc.compiler.codegen.onnx_rules import MODELC, RULES, Builder

    graph = program.predict
    _check_weights(graph, params)
    builder = Builder(graph, params, opset)
    inputs = []
    for value in graph.inputs:
        inputs.append(helper.make_tensor_value_info(builder.output(value), onnx.TensorProto.FLOAT,
                                                    _dims(value.shape)))
    for op in graph.ops:
        if op.prim not in RULES:
            raise ModelcError(f"ONNX export: the primitive '{op.prim}' (making '{op.outputs[0].name}') has no ONNX "
                              "lowering", hint="add its rule to onnx_rules.RULES")
        RULES[op.prim](builder, op)
    outputs = []
    for key, value in graph.outputs.items():
        name = builder.tensor(value, MODELC)
        if name in {i.name for i in inputs}:      # a network that passes its input through
            name = builder.node("Identity", [name], key)
        outputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, _dims(value.shape)))
    nodes, initializers = _prune(builder.nodes, builder.initializers, {o.name for o in outputs})
    source = program.spec.source.filename if program.spec.source else "<spec>"
    onnx_graph = helper.make_graph(nodes, builder.fresh(program.name), inputs, outputs, initializers,
                                   doc_string=f"modelc model '{program.name}' ({source}): its inference graph")
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(onnx_graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                              producer_name="modelc", producer_version=__version__,
                              doc_string=f"the inference graph of the modelc spec '{program.name}'")
    onnx.checker.check_model(model, full_check=True)
    return model


def export(program, params: dict[str, np.ndarray], path: str | os.PathLike, opset: int | None = None) -> int:
    """Write `program`'s inference graph with `params` as an ONNX model to `path`, atomically;
    returns the opset used."""
    model = to_onnx(program, params, opset)
    atomic_write(path, model.SerializeToString())
    return model.opset_import[0].version
