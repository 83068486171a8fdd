"""What a spec may name besides layers: losses, metrics, optimizers, learning-rate
schedules and initializers, with their Keras names, aliases, options, defaults
and formulas. Each formula is written here once (see `formulas` for the
language); the numpy, cpu and cuda targets are all generated from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from modelc.compiler.formulas import ArgMax, Let, Max, RowRule, Sum, UpdateRule
from modelc.schema import Param

EPSILON = 1e-7    # Keras's backend.epsilon(): clipping of probabilities, and the like


# ---------------------------------------------------------------- losses

@dataclass(frozen=True)
class LossDef:
    name: str                      # the Keras name, also the primitive's
    rule: RowRule                  # on probabilities (or values)
    params: tuple[Param, ...] = ()
    # regression | count | margin | binary | categorical | sparse | distribution:
    # what the target holds and what the prediction must be (the static checks read it)
    kind: str = "regression"
    aliases: tuple[str, ...] = ()
    logits_rule: RowRule | None = None     # from_logits=true, or fused after a softmax/sigmoid

    def rule_for(self, attrs: dict) -> RowRule:
        return self.logits_rule if attrs.get("from_logits") else self.rule


_FROM_LOGITS = Param("from_logits", "bool", False)
_SMOOTHING = Param("label_smoothing", "float", 0.0, low=0.0, high=1.0, high_closed=True)
_E = f"{EPSILON!r}"


def _mean_of(name: str, term: str, grad: str, where=()) -> RowRule:
    """A loss that is the mean over the sample of term(y, p); `grad` is d term / d p."""
    return RowRule(name, "total / K", (Sum("total", term),), f"({grad}) / K", where=tuple(where))


_ERROR = (("e", "p - y"),)
# Keras turns 0/1 labels into -1/1 for the hinge losses (it checks the whole batch; here a 0 is -1)
_SIGNED = (("s", "where(y == 0, -1, y)"),)
# Smoothed labels: binary towards 0.5, categorical towards 1/K (Keras's formulas)
_BINARY_T = (("t", "y * (1 - label_smoothing) + 0.5 * label_smoothing"),)
_CATEGORICAL_T = (("t", "y * (1 - label_smoothing) + label_smoothing / K"),)


def _categorical(name: str, smoothing: bool) -> tuple[RowRule, RowRule]:
    """Categorical cross-entropy on probabilities (divided by their row's sum, then clipped:
    Keras 3's order; an all-zero row is 0/0, NaN, as in Keras) and on logits
    (log-softmax of p / temperature; the temperature comes from a fused softmax)."""
    t = _CATEGORICAL_T if smoothing else (("t", "y"),)
    probs = RowRule(
        name, "-total", (Sum("s", "p"), Sum("total", f"t * log(clip(q, {_E}, 1 - {_E}))")),
        grad="(dq - dot) / s", grad_stats=(Sum("dot", "dq * q"),),
        where=t + (("q", "p / s"), ("dq", f"where((q > {_E}) & (q < 1 - {_E}), -t / clip(q, {_E}, 1), 0)")))
    logits = RowRule(
        name + "_logits", "-total",
        (Max("top", "z"), Sum("se", "exp(z - top)"), Let("lse", "log(se)"),
         Sum("total", "t * ((z - top) - lse)")),
        grad="(exp(z - top) / se * tsum - t) / temperature", grad_stats=(Sum("tsum", "t"),),
        where=t + (("z", "p / temperature"),), internal=(("temperature", 1.0),))
    return probs, logits


_CCE, _CCE_LOGITS = _categorical("categorical_crossentropy", smoothing=True)
_SCCE, _SCCE_LOGITS = _categorical("sparse_categorical_crossentropy", smoothing=False)

LOSSES = {d.name: d for d in [
    LossDef("mean_squared_error", _mean_of("mean_squared_error", "e * e", "2 * e", _ERROR), aliases=("mse",)),
    LossDef("mean_absolute_error", _mean_of("mean_absolute_error", "abs(e)", "sign(e)", _ERROR),
            aliases=("mae",)),
    LossDef("huber", _mean_of("huber", "where(abs(e) <= delta, 0.5 * e * e, delta * abs(e) - 0.5 * delta * delta)",
                              "clip(e, -delta, delta)", _ERROR),
            (Param("delta", "float", 1.0, low=0.0, low_open=True),), aliases=("huber_loss",)),
    LossDef("log_cosh", _mean_of("log_cosh", "e + softplus(-2 * e) - log(2)", "tanh(e)", _ERROR),
            aliases=("logcosh",)),
    LossDef("poisson", _mean_of("poisson", f"p - y * log(p + {_E})", f"1 - y / (p + {_E})"), kind="count"),
    LossDef("hinge", _mean_of("hinge", "maximum(1 - s * p, 0)", "where(1 - s * p > 0, -s, 0)", _SIGNED),
            kind="margin"),
    LossDef("squared_hinge", _mean_of("squared_hinge", "maximum(1 - s * p, 0) * maximum(1 - s * p, 0)",
                                      "-2 * s * maximum(1 - s * p, 0)", _SIGNED), kind="margin"),
    # -sum(y/|y| * p/|p|), each norm's inverse capped at 1/epsilon as Keras's normalize does
    LossDef("cosine_similarity", RowRule(
        "cosine_similarity", "-(yp * iy * ip)",
        (Sum("yy", "y * y"), Sum("pp", "p * p"), Sum("yp", "y * p"),
         Let("iy", f"minimum(1 / sqrt(yy), 1 / {_E})"), Let("ip", f"minimum(1 / sqrt(pp), 1 / {_E})")),
        grad=f"-iy * (y * ip - where(1 / sqrt(pp) < 1 / {_E}, yp * p * ip * ip * ip, 0))")),
    LossDef("binary_crossentropy", _mean_of(
        "binary_crossentropy",
        # the logs of the clipped probability, no epsilon inside them: Keras 3's backends
        # (tf.keras 2 added epsilon inside the logs too; at exact 0 or 1 that differs)
        "-(t * log(q) + (1 - t) * log(1 - q))",
        f"where((p > {_E}) & (p < 1 - {_E}), (1 - t) / (1 - q) - t / q, 0)",
        _BINARY_T + (("q", f"clip(p, {_E}, 1 - {_E})"),)),
        (_FROM_LOGITS, _SMOOTHING), "binary", ("bce",),
        logits_rule=_mean_of("binary_crossentropy_logits", "maximum(p, 0) - p * t + log1p(exp(-abs(p)))",
                             "sigmoid(p) - t", _BINARY_T)),
    LossDef("categorical_crossentropy", _CCE, (_FROM_LOGITS, _SMOOTHING), "categorical", ("cce",),
            logits_rule=_CCE_LOGITS),
    LossDef("sparse_categorical_crossentropy", _SCCE, (_FROM_LOGITS,), "sparse", ("scce",),
            logits_rule=_SCCE_LOGITS),
    LossDef("kl_divergence", RowRule(       # both sides clipped to [epsilon, 1], as Keras
        "kl_divergence", "total", (Sum("total", "a * log(a / b)"),),
        grad=f"where((p > {_E}) & (p < 1), -a / b, 0)",
        where=(("a", f"clip(y, {_E}, 1)"), ("b", f"clip(p, {_E}, 1)"))),
        kind="distribution", aliases=("kld", "kullback_leibler_divergence")),
]}
LOSS_ALIASES = {a: d.name for d in LOSSES.values() for a in d.aliases}


# ---------------------------------------------------------------- metrics

@dataclass(frozen=True)
class MetricDef:
    """A metric is the mean over samples of a row rule's value, or (`ratio`) the sum of
    one rule's values over the sum of another's, as Keras's stateful Precision."""
    name: str
    rule: RowRule | None = None
    params: tuple[Param, ...] = ()
    targets: tuple[str, ...] = ("sparse", "onehot", "dense")   # the target formats it accepts
    aliases: tuple[str, ...] = ()
    loss: str | None = None                  # the per-sample value of this loss (mae, mse)
    ratio: tuple[RowRule, RowRule] | None = None
    by_format: tuple[tuple[str, str], ...] = ()   # accuracy: the metric for each target format
    direction: str = "up"                    # which way is better, for EarlyStopping's mode="auto"


_THRESHOLD = Param("threshold", "float", 0.5)
# argmax(y) is the label for integer targets too (their y is the one-hot row)
_ARGMAX_HIT = RowRule("categorical_hit", "where(best == truth, 1, 0)",
                      (ArgMax("best", "p"), ArgMax("truth", "y")))
_PREDICTED = "where(p > threshold, 1, 0)"
_TRUE_POSITIVES = RowRule("true_positives", "n", (Sum("n", "where((p > threshold) & (y != 0), 1, 0)"),))

METRICS = {d.name: d for d in [
    MetricDef("accuracy", aliases=("acc",), by_format=(
        ("sparse", "sparse_categorical_accuracy"), ("onehot", "categorical_accuracy"),
        ("binary", "binary_accuracy"))),
    MetricDef("sparse_categorical_accuracy", _ARGMAX_HIT, targets=("sparse",)),
    MetricDef("categorical_accuracy", _ARGMAX_HIT, targets=("onehot",)),
    MetricDef("binary_accuracy", RowRule("binary_hits", "hits / K",
                                         (Sum("hits", f"where({_PREDICTED} == y, 1, 0)"),)),
              (_THRESHOLD,), targets=("dense",)),
    # the label is in the top k when fewer than k classes score strictly higher (ties count as in)
    MetricDef("top_k_categorical_accuracy", RowRule(
        "in_top_k", "where(above < k, 1, 0)",
        (ArgMax("truth", "y"), Sum("score", "where(j == truth, p, 0)"), Sum("above", "where(p > score, 1, 0)"))),
        (Param("k", "int", 5, low=1),), targets=("sparse", "onehot")),
    MetricDef("precision", params=(_THRESHOLD,), targets=("dense",), ratio=(
        _TRUE_POSITIVES, RowRule("predicted_positives", "n", (Sum("n", _PREDICTED),)))),
    MetricDef("recall", params=(_THRESHOLD,), targets=("dense",), ratio=(
        _TRUE_POSITIVES, RowRule("actual_positives", "n", (Sum("n", "where(y != 0, 1, 0)"),)))),
    MetricDef("mae", loss="mean_absolute_error", targets=("onehot", "dense"), aliases=("mean_absolute_error",),
              direction="down"),
    MetricDef("mse", loss="mean_squared_error", targets=("onehot", "dense"), aliases=("mean_squared_error",),
              direction="down"),
]}
METRIC_ALIASES = {a: d.name for d in METRICS.values() for a in d.aliases}


# ---------------------------------------------------------------- optimizers
# Per-element update rules (see formulas.UpdateRule) with Keras's formulas and
# defaults. `lr` in a body is the learning rate after the schedule; the other
# per-step scalars come from the rule's `scalars`, computed in float64 (plain
# scalar Python calling nothing but `math`: the cpu target compiles it with Numba).

@dataclass(frozen=True)
class OptimizerDef:
    name: str
    rule: UpdateRule
    params: tuple[Param, ...]

    @property
    def primitive(self) -> str:
        return self.rule.name


def _adam_scalars(step, lr, beta_1, beta_2):
    k = step + 1
    return (lr * math.sqrt(1 - beta_2 ** k) / (1 - beta_1 ** k),)


def _adamw_scalars(step, lr, beta_1, beta_2, weight_decay):
    k = step + 1
    return (lr * math.sqrt(1 - beta_2 ** k) / (1 - beta_1 ** k), lr * weight_decay)


def _adamax_scalars(step, lr, beta_1):
    return (1 - beta_1 ** (step + 1),)


def _nadam_scalars(step, lr, beta_1, beta_2):
    """Keras's momentum schedule u_t = beta_1 (1 - 0.5 * 0.96^t) and its running product.
    Past t = 1200 a factor is beta_1 to double precision, so the product is closed there."""
    k = step + 1
    product = 1.0
    for i in range(1, min(k, 1200) + 1):
        product *= beta_1 * (1.0 - 0.5 * 0.96 ** i)
    if k > 1200:
        product *= beta_1 ** (k - 1200)
    u_t = beta_1 * (1.0 - 0.5 * 0.96 ** k)
    u_next = beta_1 * (1.0 - 0.5 * 0.96 ** (k + 1))
    return (u_next, 1.0 - product * u_next, 1.0 - u_t, 1.0 - product, 1.0 - beta_2 ** k)


# Keras's gradient clipping, one option at a time: per-variable norm, the norm over all
# variables, or each value. `sumsq` is the sum of squares the norm is taken of.
_CLIPPING = (
    ("g", "where(clipnorm > 0, g * clipnorm / maximum(where(sumsq > 0, sqrt(sumsq), sumsq), clipnorm), g)"),
    ("g", "where(global_clipnorm > 0, g * (global_clipnorm * minimum(1 / sqrt(sumsq), 1 / global_clipnorm)"
          " + (sqrt(sumsq) - sqrt(sumsq))), g)"),
    ("g", "where(clipvalue > 0, clip(g, -clipvalue, clipvalue), g)"),
)
CLIP_OPTIONS = ("clipnorm", "global_clipnorm", "clipvalue")


def _update(name, body, **rest) -> UpdateRule:
    return UpdateRule(name + "_update", _CLIPPING + tuple(body), **rest)


_ADAM_BODY = (("m", "m + (g - m) * (1 - beta_1)"), ("v", "v + (g * g - v) * (1 - beta_2)"),
              ("w", "w - alpha * m / (sqrt(v) + epsilon)"))


def _lr(default):
    return Param("lr", "float", default, low=0.0, low_open=True, doc="learning rate")


_BETA1 = Param("beta_1", "float", 0.9, low=0.0, high=1.0)
_BETA2 = Param("beta_2", "float", 0.999, low=0.0, high=1.0)
_EPS = Param("epsilon", "float", 1e-7, low=0.0, low_open=True)
_CLIP = tuple(Param(name, "float", 0.0, low=0.0, doc="0 leaves the gradients as they are")
              for name in CLIP_OPTIONS)

OPTIMIZERS = {d.name: d for d in [
    OptimizerDef("sgd", _update("sgd", [
        ("velocity", "velocity * momentum - lr * g"),
        ("w", "where(nesterov, w + (momentum * velocity - lr * g), w + velocity)")], state=("velocity",)),
        (_lr(0.01), Param("momentum", "float", 0.0, low=0.0, high=1.0), Param("nesterov", "bool", False))),
    OptimizerDef("adam", _update("adam", _ADAM_BODY, state=("m", "v"), scalars=_adam_scalars,
                                 scalar_names=("alpha",), scalar_options=("beta_1", "beta_2")),
                 (_lr(0.001), _BETA1, _BETA2, _EPS)),
    # decoupled weight decay first, w -= lr * wd * w, then the Adam step
    OptimizerDef("adamw", _update("adamw", (("w", "w - w * decay"),) + _ADAM_BODY, state=("m", "v"),
                                  scalars=_adamw_scalars, scalar_names=("alpha", "decay"),
                                  scalar_options=("beta_1", "beta_2", "weight_decay")),
                 (_lr(0.001), Param("weight_decay", "float", 0.004, low=0.0), _BETA1, _BETA2, _EPS)),
    OptimizerDef("rmsprop", _update("rmsprop", [
        ("velocity", "velocity * rho + (1 - rho) * g * g"),
        ("increment", "lr * g / sqrt(velocity + epsilon)"),
        ("momentum_buffer", "where(momentum > 0, momentum_buffer * momentum + increment, momentum_buffer)"),
        ("w", "w - where(momentum > 0, momentum_buffer, increment)")], state=("velocity", "momentum_buffer")),
        (_lr(0.001), Param("rho", "float", 0.9, low=0.0, high=1.0),
         Param("momentum", "float", 0.0, low=0.0, high=1.0), _EPS)),
    OptimizerDef("adagrad", _update("adagrad", [
        ("accumulator", "accumulator + g * g"), ("w", "w - lr * g / sqrt(accumulator + epsilon)")],
        state=("accumulator",), init=(("accumulator", "initial_accumulator_value"),)),
        (_lr(0.001), Param("initial_accumulator_value", "float", 0.1, low=0.0), _EPS)),
    OptimizerDef("adamax", _update("adamax", [
        ("m", "m + (g - m) * (1 - beta_1)"), ("u", "maximum(beta_2 * u, abs(g))"),
        ("w", "w - lr * m / (correction * (u + epsilon))")], state=("m", "u"), scalars=_adamax_scalars,
        scalar_names=("correction",), scalar_options=("beta_1",)), (_lr(0.001), _BETA1, _BETA2, _EPS)),
    OptimizerDef("nadam", _update("nadam", [
        ("m", "m + (g - m) * (1 - beta_1)"), ("v", "v + (g * g - v) * (1 - beta_2)"),
        ("w", "w - (u_next * m / d_next + c_now * g / d_now) * lr / (sqrt(v / d_v) + epsilon)")],
        state=("m", "v"), scalars=_nadam_scalars, scalar_names=("u_next", "d_next", "c_now", "d_now", "d_v"),
        scalar_options=("beta_1", "beta_2")), (_lr(0.001), _BETA1, _BETA2, _EPS)),
]}
OPTIMIZERS = {name: OptimizerDef(d.name, d.rule, d.params + _CLIP) for name, d in OPTIMIZERS.items()}
# Keras spells it learning_rate; accept that too.
OPTION_ALIASES = {"learning_rate": "lr"}


# ---------------------------------------------------------------- learning-rate schedules

SCHEDULES: dict[str, tuple[Param, ...]] = {
    "constant": (),
    "exponential_decay": (Param("rate", "float", low=0.0, low_open=True),
                          Param("steps", "int", low=1), Param("staircase", "bool", False)),
    "inverse_time_decay": (Param("rate", "float", low=0.0),
                           Param("steps", "int", low=1), Param("staircase", "bool", False)),
    "cosine_decay": (Param("steps", "int", low=1), Param("alpha", "float", 0.0, low=0.0, high=1.0,
                                                            high_closed=True)),
}


def schedule_tuple(name: str, bound: dict) -> tuple:
    """The schedule as the flat tuple the update primitives take (see formulas.learning_rate)."""
    return (name,) + tuple(bound[p.name] for p in SCHEDULES[name])


# ---------------------------------------------------------------- initializers

@dataclass(frozen=True)
class InitDef:
    name: str
    draw: Callable[[np.random.Generator, tuple, int, int], np.ndarray]   # (rng, shape, fan_in, fan_out)


def _truncated_normal(rng, shape, stddev):
    """Normal values redrawn beyond two standard deviations, as Keras does."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return out * stddev


_TRUNC = 0.87962566103423978   # the stddev of a unit normal truncated at +-2

INITIALIZERS = {d.name: d for d in [
    InitDef("glorot_uniform", lambda rng, s, fi, fo: rng.uniform(-1, 1, s) * math.sqrt(6 / (fi + fo))),
    InitDef("glorot_normal", lambda rng, s, fi, fo: _truncated_normal(rng, s, math.sqrt(2 / (fi + fo)) / _TRUNC)),
    InitDef("he_uniform", lambda rng, s, fi, fo: rng.uniform(-1, 1, s) * math.sqrt(6 / fi)),
    InitDef("he_normal", lambda rng, s, fi, fo: _truncated_normal(rng, s, math.sqrt(2 / fi) / _TRUNC)),
    InitDef("lecun_normal", lambda rng, s, fi, fo: _truncated_normal(rng, s, math.sqrt(1 / fi) / _TRUNC)),
    InitDef("zeros", lambda rng, s, fi, fo: np.zeros(s)),
    InitDef("ones", lambda rng, s, fi, fo: np.ones(s)),
    # Keras's RandomNormal and RandomUniform defaults (their options are not settable from a spec yet)
    InitDef("normal", lambda rng, s, fi, fo: rng.normal(0.0, 0.05, s)),
    InitDef("uniform", lambda rng, s, fi, fo: rng.uniform(-0.05, 0.05, s)),
]}
INIT_ALIASES = {"xavier_uniform": "glorot_uniform", "xavier_normal": "glorot_normal",
                "kaiming_normal": "he_normal", "kaiming_uniform": "he_uniform", "zero": "zeros",
                "random_normal": "normal", "random_uniform": "uniform"}


def initialize(name: str, rng: np.random.Generator, shape: tuple, fan_in: int, fan_out: int) -> np.ndarray:
    return INITIALIZERS[name].draw(rng, shape, fan_in, fan_out).astype(np.float32)
