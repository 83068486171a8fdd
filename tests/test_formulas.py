"""Every formula of the catalog against independent values: Keras 3.15.1's own losses,
metrics and optimizers (torch backend) on the inputs below, so that generating every
target from the same formula cannot hide a wrong formula. A formula added to the
catalog without a value here fails `test_every_formula_has_a_keras_value`.

The values were printed by `KERAS_BACKEND=torch python tests/keras_values.py` in a
virtual environment with keras==3.15.1 and torch==2.13.0 (neither is needed here).
"""
from __future__ import annotations

import numpy as np
import pytest

from modelc.compiler.catalog import LOSSES, METRICS, OPTIMIZERS
from modelc.compiler.primitives import PRIMITIVES
from tests.keras_values import GRADS, INPUTS, W0

LOSS_VALUES = {
    'mean_squared_error': [0.60333335, 0.16083334],
    'mean_absolute_error': [0.63333338, 0.31666669],
    'huber': [0.29500002, 0.08041667],
    'huber:delta=0.5': [0.21833335, 0.07875001],
    'log_cosh': [0.25627196, 0.07672471],
    'poisson': [0.71470124, 0.41697279],
    'hinge': [0.06666666, 0.56666666],
    'squared_hinge': [0.01333333, 0.52333337],
    'cosine_similarity': [-0.63921678, -0.9309426],
    'binary_crossentropy': [0.49870309, 0.35764822],
    'binary_crossentropy:label_smoothing=0.2': [0.55964065, 0.51552147],
    'binary_crossentropy:from_logits': [0.2276568, 0.44543394],
    'binary_crossentropy:from_logits,label_smoothing=0.2': [0.39432344, 0.53876728],
    'categorical_crossentropy': [0.51082557, 1.20397282],
    'categorical_crossentropy:label_smoothing=0.1': [0.62787884, 1.23143804],
    'categorical_crossentropy:from_logits': [0.34234965, 0.93922722],
    'categorical_crossentropy:from_logits,label_smoothing=0.1': [0.50484961, 0.99922717],
    'sparse_categorical_crossentropy': [0.51082557, 1.20397282],
    'sparse_categorical_crossentropy:from_logits': [0.34234965, 0.93922722],
    'kl_divergence': [0.46834952, 0.25370222],
}

METRIC_VALUES = {
    'binary_accuracy': 0.66666669,
    'binary_accuracy:threshold=0.65': 0.83333337,
    'categorical_accuracy': 0.5,
    'sparse_categorical_accuracy': 0.5,
    'top_k_categorical_accuracy:k=1': 1.0,
    'top_k_categorical_accuracy:k=2': 1.0,
    'precision': 0.66666669,
    'precision:threshold=0.65': 1.0,
    'recall': 0.66666669,
    'recall:threshold=0.65': 0.66666669,
}

OPTIMIZER_VALUES = {
    'sgd': [[0.92999995, 2.11999989, -0.58499998], [0.15000002, -0.29000002]],
    'sgd:momentum=0.9': [[0.80849999, 2.36299992, -0.67274994], [-0.10199998, -0.33410001]],
    'sgd:momentum=0.9,nesterov': [[0.75764996, 2.44669986, -0.74047494], [-0.21179998, -0.41069004]],
    'adam': [[0.97473466, 2.02408457, -0.52812111], [0.28393248, -0.22836764]],
    'adamw:weight_decay=0.1': [[0.9717676, 2.01806068, -0.52659297], [0.28305602, -0.22773908]],
    'rmsprop': [[0.95816457, 2.03764939, -0.56611091], [0.27557507, -0.28892443]],
    'rmsprop:momentum=0.5': [[0.9242546, 2.07155919, -0.60411346], [0.25923011, -0.32771581]],
    'adagrad': [[0.88644141, 2.11459017, -0.6552518], [0.22389089, -0.37176877]],
    'adamax': [[0.97686559, 2.02239513, -0.52319068], [0.2856372, -0.22312254]],
    'nadam': [[0.98452598, 2.0140698, -0.523067], [0.29066476, -0.23014614]],
    'adam:clipnorm=0.5': [[0.9762646, 2.02196908, -0.52838898], [0.28762695, -0.22688043]],
    'sgd:clipvalue=0.3': [[0.95999992, 2.02999997, -0.565], [0.27000001, -0.27000001]],
    'sgd:global_clipnorm=0.5': [[0.98597485, 2.01756763, -0.5277493], [0.26462689, -0.23862818]],
    'nadam:clipnorm=0.5': [[0.98604178, 2.01219487, -0.52430183], [0.29109275, -0.23106852]],
}

# Keras's learning-rate schedules (keras.optimizers.schedules.*), with modelc's schedule tuples
SCHEDULE_VALUES = {
    ("sgd", ("exponential_decay", 0.5, 2, False)):
        [[0.93171573, 2.12656856, -0.5653553], [0.14571068, -0.25621322]],    # ExponentialDecay(0.1, 2, 0.5)
    ("sgd", ("exponential_decay", 0.5, 2, True)):
        [[0.91999996, 2.14999986, -0.57999998], [0.17500001, -0.26500002]],   # ... staircase=True
    ("sgd", ("inverse_time_decay", 0.5, 1, False)):
        [[0.93333334, 2.12333322, -0.56333333], [0.14166668, -0.255]],        # InverseTimeDecay(0.1, 1, 0.5)
    ("adam", ("cosine_decay", 2, 0.1)):
        [[0.98402709, 2.01585484, -0.51615518], [0.28819481, -0.21596636]],   # CosineDecay(0.01, 2, alpha=0.1)
}

LOSS_INPUTS = {   # loss kind -> (target, prediction on probabilities/values, on logits)
    "regression": ("Y_REG", "P_REG", None), "count": ("Y_CNT", "P_CNT", None),
    "margin": ("Y_BIN", "Z_BIN", None), "binary": ("Y_BIN", "P_BIN", "Z_BIN"),
    "categorical": ("Y_CAT", "P_CAT", "Z_CAT"), "sparse": ("L_CAT", "P_CAT", "Z_CAT"),
    "distribution": ("Y_DIS", "P_CAT", None),
}
METRIC_INPUTS = {"dense": ("Y_BIN", "P_BIN"), "onehot": ("Y_CAT", "P_CAT"), "sparse": ("L_CAT", "P_CAT")}
# Keras's metric objects take these names for the same options
KERAS_OPTION = {"thresholds": "threshold"}


def _options(key: str) -> tuple[str, dict]:
    name, _, rest = key.partition(":")
    options = {}
    for part in filter(None, rest.split(",")):
        option, _, value = part.partition("=")
        options[option] = float(value) if value else True
    return name, options


@pytest.mark.parametrize("key", sorted(LOSS_VALUES))
def test_loss_matches_keras(key):
    name, options = _options(key)
    y, p, z = LOSS_INPUTS[LOSSES[name].kind]
    prediction = INPUTS[z] if options.get("from_logits") else INPUTS[p]
    got = PRIMITIVES[name].impl(INPUTS[y], prediction, **options)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, LOSS_VALUES[key], rtol=2e-6, atol=1e-7)


def _metric_value(name: str, options: dict, y, p) -> float:
    d = METRICS[name]
    attrs = {param.name: param.default for param in d.params}
    attrs.update(options)
    if "k" in attrs:
        attrs["k"] = int(attrs["k"])
    if d.ratio is not None:
        num, den = (PRIMITIVES[rule.name].impl(y, p, **attrs).sum() for rule in d.ratio)
        return float(num / den) if den > 0 else 0.0
    return float(PRIMITIVES[d.rule.name].impl(y, p, **attrs).mean())


@pytest.mark.parametrize("key", sorted(METRIC_VALUES))
def test_metric_matches_keras(key):
    name, options = _options(key)
    fmt = METRICS[name].targets[0] if len(METRICS[name].targets) == 1 else "onehot"
    y, p = METRIC_INPUTS[fmt]
    prediction = INPUTS["Z_CAT"] if key == "top_k_categorical_accuracy:k=2" else INPUTS[p]
    assert _metric_value(name, options, INPUTS[y], prediction) == pytest.approx(METRIC_VALUES[key], abs=1e-7)


def _train(name: str, options: dict, schedule=("constant",)) -> list[np.ndarray]:
    d = OPTIMIZERS[name]
    attrs = {param.name: param.default for param in d.params}
    attrs.update(options, lr=0.1 if name in ("sgd", "adagrad") else 0.01, schedule=schedule)
    rule = d.rule
    weights = [w.copy() for w in W0]
    start = rule.initial(attrs)
    states = [[np.full(w.shape, start[s], np.float32) for s in rule.state] for w in weights]
    for step, grads in enumerate(GRADS):
        total = sum(float((g * g).sum()) for g in grads)
        for w, g, state in zip(weights, grads, states):
            extra = ()
            if attrs.get("clipnorm"):
                extra = (np.float32((g * g).sum()),)
            elif attrs.get("global_clipnorm"):
                extra = (np.float32(total),)
            PRIMITIVES[rule.name].impl(w, g.copy(), *state, np.int64(step), *extra, **attrs)
    return weights


@pytest.mark.parametrize("key", sorted(OPTIMIZER_VALUES))
def test_optimizer_matches_keras(key):
    name, options = _options(key)
    for got, expected in zip(_train(name, options), OPTIMIZER_VALUES[key]):
        np.testing.assert_allclose(got, expected, rtol=3e-6, atol=2e-7)


@pytest.mark.parametrize("name, schedule", sorted(SCHEDULE_VALUES), ids=lambda v: str(v))
def test_schedule_matches_keras(name, schedule):
    for got, expected in zip(_train(name, {}, schedule), SCHEDULE_VALUES[name, schedule]):
        np.testing.assert_allclose(got, expected, rtol=3e-6, atol=2e-7)


def test_every_formula_has_a_keras_value():
    assert {k.partition(":")[0] for k in LOSS_VALUES} == set(LOSSES)
    with_rules = {name for name, d in METRICS.items() if d.rule or d.ratio}
    assert with_rules - {k.partition(":")[0] for k in METRIC_VALUES} == set()
    assert {k.partition(":")[0] for k in OPTIMIZER_VALUES} == set(OPTIMIZERS)
    assert {o for k in OPTIMIZER_VALUES for o in _options(k)[1]} >= {"clipnorm", "clipvalue", "global_clipnorm"}
    from modelc.compiler.catalog import SCHEDULES
    assert {schedule[0] for _, schedule in SCHEDULE_VALUES} == set(SCHEDULES) - {"constant"}
