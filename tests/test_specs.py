"""Every spec in specs/ trains to its own `expect` section on the numpy target.

The list is read from the folder, so a new spec is tested without touching
this file. Specs that read MNIST are slow (minutes on the numpy target) and
marked so; the others generate their data from a seed and take about a second.
A convnet on MNIST trains on the cpu target: the numpy reference's convolution
would take hours for its 15 epochs (the cpu target is checked against numpy by
`modelc verify` on the same spec, tests/test_image_layers.py).
"""
from __future__ import annotations

from pathlib import Path

import pytest

import modelc
from modelc.runtime import training

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.model"))


def _reads_mnist(path: Path) -> bool:
    settings = training.settings(modelc.read_spec(path)[0])
    return settings.data is not None and settings.data.name in ("mnist", "idx")


def _target(path: Path) -> str:
    program = modelc.compile(path, target="numpy").program
    convnet = any(layer.kind == "conv2d" for layer in program.layers)
    return "cpu" if convnet and _reads_mnist(path) else "numpy"


PARAMS = [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if _reads_mnist(p) else [])
          for p in SPECS]


def test_the_examples_are_all_there():
    names = {p.stem for p in SPECS}
    assert {"mnist", "mnist_onehot", "blobs", "blobs_kld", "random_temperature", "functional",
            "regression_mse", "regression_mae", "regression_huber", "mnist_cnn", "images_cnn"} <= names


@pytest.mark.parametrize("path", PARAMS)
def test_spec_trains_to_its_expectations(path):
    model = modelc.compile(path, target=_target(path))
    assert model.program.spec.expect, f"{path.name} has no expect section"
    result = model.train_from_spec(verbose=0, quiet_data=True)
    outcomes = model.check_expectations(result)
    failed = [str(o) for o in outcomes if not o.passed]
    assert not failed, failed
    assert len(outcomes) == len(model.program.spec.expect)


def test_functional_spec_is_a_graph():
    program = modelc.compile(ROOT / "specs" / "functional.model", target="numpy").program
    names = [layer.name for layer in program.layers]
    assert names == ["hidden1", "hidden2", "joined", "output"]
    assert [layer.kind for layer in program.layers] == ["dense", "dense", "concat", "dense"]
    assert program.layers[2].output.shape[1:] == (5,)           # 3 from hidden1 + 2 from hidden2
    assert program.params[0].init == "he_normal"


def test_temperature_reaches_the_softmax():
    program = modelc.compile(ROOT / "specs" / "random_temperature.model", target="numpy").program
    temperatures = [op.attrs.get("temperature") for op in program.predict.ops if op.prim == "softmax"]
    assert temperatures == [0.6]
