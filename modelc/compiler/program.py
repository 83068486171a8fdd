"""What the compiler hands to a backend: the graphs and what the runtime needs to drive them."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from modelc.compiler.ir import Graph, Value
from modelc.grammar import ast


@dataclass
class ParamInfo:
    value: Value
    layer: str
    init: str
    fan_in: int
    fan_out: int


@dataclass
class LayerInfo:
    name: str
    kind: str
    output: Value
    params: list[Value]
    pos: ast.Pos
    inputs: list[str] = field(default_factory=list)   # the layers (or inputs) it reads


@dataclass
class TargetInfo:
    value: Value
    format: str                 # sparse | onehot | dense
    classes: int | None


@dataclass
class Program:
    name: str
    spec: ast.Spec
    spec_hash: str
    input: Value
    target: TargetInfo | None
    output: Value                       # the prediction
    params: list[ParamInfo]
    layers: list[LayerInfo]
    predict: Graph
    evaluate: Graph | None
    train: Graph | None
    metric_names: list[str]             # outputs of evaluate/train besides "loss", in order
    optimizer: str | None
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    state: list[Value] = field(default_factory=list)   # optimizer state, in train.state order
    loss_name: str | None = None

    @property
    def result_names(self) -> list[str]:
        return ["loss"] + self.metric_names


def spec_hash(spec: ast.Spec) -> str:
    """A hash of the spec text, stored in checkpoints so weights meet their own spec."""
    return hashlib.sha256(spec.source.text.encode()).hexdigest()[:16]
