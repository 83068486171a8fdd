"""What a spec may name besides layers: losses, metrics, optimizers, learning-rate
schedules and initializers, with their Keras names, aliases, options and defaults."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from modelc.schema import Param


# ---------------------------------------------------------------- losses

@dataclass(frozen=True)
class LossDef:
    name: str                      # the Keras name, also the primitive's
    params: tuple[Param, ...] = ()
    kind: str = "regression"       # regression | binary | categorical | sparse | distribution
    aliases: tuple[str, ...] = ()


_FROM_LOGITS = Param("from_logits", "bool", False)
_SMOOTHING = Param("label_smoothing", "float", 0.0, low=0.0, high=1.0, high_closed=True)

LOSSES = {d.name: d for d in [
    LossDef("mean_squared_error", aliases=("mse",)),
    LossDef("mean_absolute_error", aliases=("mae",)),
    LossDef("huber", (Param("delta", "float", 1.0, low=0.0, low_open=True),), aliases=("huber_loss",)),
    LossDef("binary_crossentropy", (_FROM_LOGITS, _SMOOTHING), "binary", ("bce",)),
    LossDef("categorical_crossentropy", (_FROM_LOGITS, _SMOOTHING), "categorical", ("cce",)),
    LossDef("sparse_categorical_crossentropy", (_FROM_LOGITS,), "sparse", ("scce",)),
    LossDef("kl_divergence", (), "distribution", ("kld", "kullback_leibler_divergence")),
]}
LOSS_ALIASES = {a: d.name for d in LOSSES.values() for a in d.aliases}


# ---------------------------------------------------------------- metrics

METRICS = ("accuracy", "mae", "mse")
METRIC_ALIASES = {"acc": "accuracy", "mean_absolute_error": "mae", "mean_squared_error": "mse"}


# ---------------------------------------------------------------- optimizers

@dataclass(frozen=True)
class OptimizerDef:
    name: str
    primitive: str
    params: tuple[Param, ...]


_LR = Param("lr", "float", 0.001, low=0.0, low_open=True, doc="learning rate")
_BETA1 = Param("beta_1", "float", 0.9, low=0.0, high=1.0)
_BETA2 = Param("beta_2", "float", 0.999, low=0.0, high=1.0)
_EPS = Param("epsilon", "float", 1e-7, low=0.0, low_open=True)

OPTIMIZERS = {d.name: d for d in [
    OptimizerDef("sgd", "sgd_update", (Param("lr", "float", 0.01, low=0.0, low_open=True),
                                        Param("momentum", "float", 0.0, low=0.0, high=1.0),
                                        Param("nesterov", "bool", False))),
    OptimizerDef("adam", "adam_update", (_LR, _BETA1, _BETA2, _EPS)),
    OptimizerDef("adamw", "adamw_update", (_LR, Param("weight_decay", "float", 0.004, low=0.0),
                                            _BETA1, _BETA2, _EPS)),
    OptimizerDef("rmsprop", "rmsprop_update", (_LR, Param("rho", "float", 0.9, low=0.0, high=1.0),
                                                Param("momentum", "float", 0.0, low=0.0, high=1.0),
                                                _EPS)),
]}
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
    """The schedule as the flat tuple the update primitives take (see primitives.learning_rate)."""
    return (name,) + tuple(bound[p.name] for p in SCHEDULES[name])


# ---------------------------------------------------------------- initializers

@dataclass(frozen=True)
class InitDef:
    name: str
    draw: Callable[[np.random.Generator, tuple, int, int, dict], np.ndarray]
    params: tuple[Param, ...] = ()


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
    InitDef("glorot_uniform", lambda rng, s, fi, fo, p: rng.uniform(-1, 1, s) * math.sqrt(6 / (fi + fo))),
    InitDef("glorot_normal", lambda rng, s, fi, fo, p: _truncated_normal(rng, s, math.sqrt(2 / (fi + fo)) / _TRUNC)),
    InitDef("he_uniform", lambda rng, s, fi, fo, p: rng.uniform(-1, 1, s) * math.sqrt(6 / fi)),
    InitDef("he_normal", lambda rng, s, fi, fo, p: _truncated_normal(rng, s, math.sqrt(2 / fi) / _TRUNC)),
    InitDef("lecun_normal", lambda rng, s, fi, fo, p: _truncated_normal(rng, s, math.sqrt(1 / fi) / _TRUNC)),
    InitDef("zeros", lambda rng, s, fi, fo, p: np.zeros(s)),
    InitDef("ones", lambda rng, s, fi, fo, p: np.ones(s)),
    InitDef("normal", lambda rng, s, fi, fo, p: rng.normal(p.get("mean", 0.0), p.get("stddev", 0.05), s)),
    InitDef("uniform", lambda rng, s, fi, fo, p: rng.uniform(p.get("minval", -0.05), p.get("maxval", 0.05), s)),
]}
INIT_ALIASES = {"xavier_uniform": "glorot_uniform", "xavier_normal": "glorot_normal",
                "kaiming_normal": "he_normal", "kaiming_uniform": "he_uniform", "zero": "zeros",
                "random_normal": "normal", "random_uniform": "uniform"}


def initialize(name: str, rng: np.random.Generator, shape: tuple, fan_in: int, fan_out: int) -> np.ndarray:
    return INITIALIZERS[name].draw(rng, shape, fan_in, fan_out, {}).astype(np.float32)
