"""What the compiler hands to a backend: the graphs and what the runtime needs to drive them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelc.compiler.catalog import OPTIMIZERS
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
    metric_names: list[str]             # the metrics, in the spec's order
    # the outputs of evaluate/train that backends sum over samples: "loss", then each metric
    # (or a ratio metric's numerator and denominator, named in `ratios`)
    result_names: list[str]
    ratios: dict[str, tuple[str, str]]
    optimizer: str | None
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    state: list[Value] = field(default_factory=list)   # optimizer state, in train.state order
    loss_name: str | None = None

    @property
    def shown_names(self) -> list[str]:
        """What the results are called: loss first, then the metrics."""
        return ["loss"] + self.metric_names

    def initial_state(self) -> dict[str, np.ndarray]:
        """The optimizer state before the first step (zero unless the optimizer sets a start
        value, as Adagrad's initial_accumulator_value)."""
        if self.optimizer is None:
            return {}
        start = OPTIMIZERS[self.optimizer].rule.initial(self.optimizer_options)
        return {v.name: np.full(v.shape, start[v.name.rsplit(".", 1)[1]], np.float32) for v in self.state}

    def results(self, sums, count: int) -> dict[str, float]:
        """The loss and metrics from a backend's sums over `count` samples: means, and
        for a ratio metric its numerator's sum over its denominator's (0 when that is 0)."""
        total = {k: float(s) for k, s in zip(self.result_names, sums)}
        out = {}
        for name in self.shown_names:
            if name in self.ratios:
                num, den = self.ratios[name]
                out[name] = total[num] / total[den] if total[den] > 0 else 0.0
            else:
                out[name] = total[name] / count if count else 0.0
        return out
