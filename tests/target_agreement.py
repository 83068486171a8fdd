"""Shared by the target tests: run the same spec, weights and batches on two
backends and report the largest differences. The numpy target is the truth."""
from __future__ import annotations

import numpy as np

from modelc.compiler.build import build_program
from modelc.compiler.catalog import LOSSES
from modelc.compiler.codegen import get_backend
from modelc.grammar.parser import parse
from modelc.runtime.seeding import initial_weights


def sample_data(program, n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + tuple(program.input.shape[1:])).astype(np.float32)
    target = program.target
    if target.format == "sparse":
        y = rng.integers(0, target.classes, n)
    elif target.format == "onehot":
        y = np.eye(target.classes, dtype=np.float32)[rng.integers(0, target.classes, n)]
    else:
        y = rng.uniform(0.05, 0.95, (n,) + tuple(target.value.shape[1:])).astype(np.float32)
        kind = LOSSES[program.loss_name].kind
        if kind in ("binary", "margin"):
            y = (y > 0.5).astype(np.float32) * (2 if kind == "margin" else 1) - (kind == "margin")
        elif kind == "count":
            y = np.floor(y * 4).astype(np.float32)
        elif kind == "distribution":
            y = y / y.sum(axis=-1, keepdims=True)
    return x, y


def initial_state(program, seed: int = 0):
    return initial_weights(program, seed), program.initial_state()


def run(target: str, program, x, y, steps: int, batch: int):
    backend = get_backend(target, program)
    backend.load_state(*initial_state(program))
    data = backend.upload(x, y)
    order = np.random.default_rng(2).permutation(len(x))
    sums = backend.train(data, order, batch, 0, steps, 0)
    params, state = backend.read_state()
    return {
        "train_sums": sums,
        "params": params,
        "state": state,
        "evaluate": backend.evaluate(backend.upload(x, y), batch),
        "predict": backend.predict(backend.upload(x), batch),
    }


def compare(spec_text: str, other: str, steps: int = 3, batch: int = 8, n: int = 29):
    """Largest absolute difference per quantity between `other` and numpy, relative to scale."""
    program = build_program(parse(spec_text, "test.model"))
    x, y = sample_data(program, n)
    ref = run("numpy", program, x, y, steps, batch)
    got = run(other, program, x, y, steps, batch)
    report = {}
    for key in ("train_sums", "evaluate", "predict"):
        report[key] = (np.abs(np.asarray(got[key]) - ref[key]).max(), np.abs(ref[key]).max())
    for group in ("params", "state"):
        for name, array in ref[group].items():
            report[f"{group}:{name}"] = (np.abs(got[group][name] - array).max(), np.abs(array).max())
    return report


def assert_close(report, rtol=2e-5, atol=2e-6):
    bad = {k: v for k, v in report.items() if v[0] > atol + rtol * v[1]}
    assert not bad, "targets disagree: " + ", ".join(f"{k}: diff {d:.3g} (scale {s:.3g})" for k, (d, s) in bad.items())
