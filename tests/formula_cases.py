"""Test cases made from the catalog, so a new loss, metric or optimizer is tested with
no edit here: valid inputs for each loss kind and metric, and the variants of each
formula (from_logits, non-default options, clipping)."""
from __future__ import annotations

import numpy as np

from modelc.compiler.catalog import CLIP_OPTIONS, LOSSES, METRICS, OPTIMIZERS
from modelc.compiler.ir import F32, I64

B, K = 3, 4


def _probs(rng, shape):
    p = rng.uniform(0.05, 1.0, shape)
    return p / p.sum(axis=-1, keepdims=True)


# loss kind -> (target maker, prediction maker on probabilities/values, prediction maker on logits)
def _kind_data(kind: str, rng, logits: bool):
    shape = (B, K)
    if kind == "sparse":
        y = rng.integers(0, K, B)
    elif kind == "categorical":
        y = np.eye(K)[rng.integers(0, K, B)]
    elif kind == "binary":
        y = rng.integers(0, 2, shape).astype(np.float64)
    elif kind == "margin":
        y = rng.choice([-1.0, 1.0], shape)
    elif kind == "count":
        y = rng.integers(0, 4, shape).astype(np.float64)
    elif kind == "distribution":
        y = _probs(rng, shape)
    else:
        y = rng.uniform(-1.5, 1.5, shape)
    if logits or kind in ("regression", "margin"):
        # away from kinks (|error| = 0 or delta, margins of exactly 1), where derivatives jump
        p = rng.uniform(0.2, 1.3, shape) * rng.choice([-1, 1], shape)
    elif kind == "count":
        p = rng.uniform(0.3, 3.0, shape)
    elif kind in ("categorical", "sparse", "distribution"):
        p = _probs(rng, shape)
    else:
        p = rng.uniform(0.1, 0.9, shape)
    return y, p


def _other_value(param) -> float:
    """A value of a float option other than its default, inside its range."""
    if param.low is not None and param.high is not None:
        return param.low + 0.3 * (param.high - param.low)
    return float(param.default) * 0.7 + 0.1


def loss_cases():
    """(primitive, [(dtype, shape, array)], attrs) for every loss and variant."""
    rng = np.random.default_rng(0)
    cases = []
    for d in LOSSES.values():
        variants = [{}]
        if d.logits_rule is not None:
            variants.append({"from_logits": True})
            if d.kind in ("categorical", "sparse"):
                variants.append({"from_logits": True, "temperature": 0.6})   # as fused after a softmax
        for param in d.params:
            if param.kind == "float":
                variants.append({param.name: _other_value(param)})
                if d.logits_rule is not None:
                    variants.append({param.name: _other_value(param), "from_logits": True})
        for attrs in variants:
            y, p = _kind_data(d.kind, rng, bool(attrs.get("from_logits")))
            ytype = (I64, (B,)) if d.kind == "sparse" else (F32, (B, K))
            cases.append((d.name, [(*ytype, y), (F32, (B, K), p)], attrs))
    return cases


METRIC_TARGET_KIND = {"sparse": "sparse", "onehot": "categorical", "dense": "binary"}


def metric_cases():
    """(primitive, inputs, attrs) for every row rule of every metric, on each target format it takes."""
    rng = np.random.default_rng(1)
    cases = []
    for d in METRICS.values():
        rules = ((d.rule,) if d.rule else ()) + (d.ratio or ())
        for rule in rules:
            for fmt in d.targets:
                y, p = _kind_data(METRIC_TARGET_KIND[fmt], rng, False)
                ytype = (I64, (B,)) if fmt == "sparse" else (F32, (B, K))
                attrs = {param.name: param.default for param in d.params}
                if "k" in attrs:
                    attrs["k"] = 2
                cases.append((rule.name, [(*ytype, y), (F32, (B, K), p)], attrs))
    return cases


def optimizer_calls() -> dict[str, str]:
    """A spec's optimizer line for every optimizer, each bool option on, each momentum-like
    option set, and each clipping option (on a rotating optimizer)."""
    calls = {}
    names = sorted(OPTIMIZERS)
    for name in names:
        d = OPTIMIZERS[name]
        calls[name] = f"{name}(lr=0.01)"
        options = {p.name: p for p in d.params}
        if "momentum" in options:
            calls[f"{name}_momentum"] = f"{name}(lr=0.01, momentum=0.5)"
        for p in d.params:
            if p.kind == "bool":
                calls[f"{name}_{p.name}"] = f"{name}(lr=0.01, momentum=0.5, {p.name}=true)"
    for i, option in enumerate(CLIP_OPTIONS):
        name = names[i % len(names)]
        calls[f"{name}_{option}"] = f"{name}(lr=0.01, {option}=0.05)"
    return calls


# loss kind -> (the target's declaration, the last layer on probabilities/values, on logits)
_SPEC_SHAPES = {
    "regression": ("target y: f32[2]", "dense(2)", None),
    "count": ("target y: f32[2]", "dense(2, softplus)", None),
    "margin": ("target y: f32[2]", "dense(2, tanh)", None),
    "distribution": ("target y: f32[3]", "dense(3, softmax)", None),
    "binary": ("target y: f32[2]", "dense(2, sigmoid)", "dense(2)"),
    "categorical": ("target y: f32[3] onehot", "dense(3, softmax)", "dense(3)"),
    "sparse": ("target y: int[] classes 3", "dense(3, softmax)", "dense(3)"),
}
_FORMAT = {"sparse": "sparse", "categorical": "onehot"}


def _metrics_for(kind: str) -> str:
    fmt = _FORMAT.get(kind, "dense")
    names = [name for name, d in METRICS.items() if fmt in d.targets and not d.by_format]
    if fmt != "dense" or kind == "binary":
        names.append("accuracy")      # resolved by the target's format
    return ", ".join(f"{n}(k=2)" if n == "top_k_categorical_accuracy" else n for n in names)


def loss_specs() -> dict[str, tuple[str, str, str, str]]:
    """(target declaration, last layer, loss line, metrics line) for every loss, its logits form
    and each float option set, with every metric the target's format allows."""
    specs = {}
    for d in LOSSES.values():
        target, last, logits_last = _SPEC_SHAPES[d.kind]
        metrics = _metrics_for(d.kind)
        specs[d.name] = (target, last, f"{d.name}(y, p)", metrics)
        if logits_last:
            specs[f"{d.name}_logits"] = (target, logits_last, f"{d.name}(y, p, from_logits=true)", metrics)
        for param in d.params:
            if param.kind == "float":
                value = f"{_other_value(param):.3g}"
                specs[f"{d.name}_{param.name}"] = (target, logits_last or last,
                                                   f"{d.name}(y, p, {param.name}={value}"
                                                   + (", from_logits=true)" if logits_last else ")"), metrics)
    return specs
