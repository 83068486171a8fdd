"""A Keras model's compile configuration (its loss, optimizer and metrics) in modelc's terms.

Losses, optimizers, schedules and metrics are looked up in modelc's catalog by Keras's
names; options modelc lacks are refused when they change training (a loss reduction, Adam's
amsgrad, an exponential moving average of the weights) and noted when they change nothing
modelc computes. A metric modelc lacks is left out with a note: metrics change neither the
predictions nor the training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelc.compiler.catalog import (LOSS_ALIASES, LOSSES, METRIC_ALIASES, METRICS, OPTIMIZERS,
                                     SCHEDULES)
from modelc.errors import ModelcError
from modelc.compiler.layers import keras_snake_case
from modelc.keras_import.options import Options, shown

_CHANGES_TRAINING = "it changes training, and modelc has no counterpart; compile the model without it"
_SCHEDULE_KEYS = {"decay_steps": "steps", "decay_rate": "rate"}      # Keras's name -> modelc's
_METRIC_KEYS = {"thresholds": "threshold"}


@dataclass
class Training:
    loss: str
    loss_options: dict[str, Any]
    optimizer: str
    optimizer_options: dict[str, Any]
    schedule: tuple[str, dict[str, Any]] | None
    metrics: list[tuple[str, dict[str, Any]]]
    notes: list[str] = field(default_factory=list)

    @property
    def loss_kind(self) -> str:
        return LOSSES[self.loss].kind


def _named(value: Any, what: str) -> tuple[str, dict, str]:
    """A Keras object saved by name ("adam") or serialized ({"class_name": "Adam", "config": ...}):
    (its snake-cased name, its config, how it was written)."""
    if isinstance(value, str):
        return keras_snake_case(value), {}, value
    if isinstance(value, dict) and isinstance(value.get("class_name"), str):
        config = value.get("config") or {}
        return keras_snake_case(value["class_name"]), config, value["class_name"]
    raise ModelcError(f"the {what} {shown(value)} is not one modelc can read",
                      hint=f"modelc reads one {what} saved by Keras by name or as a Keras object"
                           + ("; a model with several outputs has several losses, which modelc does not train"
                              if what == "loss" else ""))


def read_training(compile_config: Any) -> Training | None:
    """The model's training configuration, or None when it was saved without `compile()`."""
    if not compile_config or not isinstance(compile_config, dict) or compile_config.get("loss") is None:
        return None
    o = Options("the compile configuration", compile_config,
                ignored=("run_eagerly", "steps_per_execution", "jit_compile", "auto_scale_loss"))
    loss, loss_options = _loss(o.take("loss"))
    o.unset("loss_weights", why=_CHANGES_TRAINING)
    optimizer, optimizer_options, schedule = _optimizer(o.take("optimizer", "rmsprop"))
    notes: list[str] = []
    metrics = _metrics(o.take("metrics", None), notes)
    weighted = o.take("weighted_metrics", None)
    if weighted:
        notes.append(f"the weighted metrics {shown(weighted)} are left out: modelc weighs every sample alike")
    o.finish()
    return Training(loss, loss_options, optimizer, optimizer_options, schedule, metrics, notes)


def _catalog_entry(value: Any, what: str, table: dict, aliases: dict) -> tuple[str, Options]:
    """A loss or metric: its modelc name (aliases resolved) and its Keras options to read."""
    name, config, written = _named(value, what)
    name = aliases.get(name, name)
    if name not in table:
        raise ModelcError(f"the {what} {written}: modelc has no such {what}",
                          hint=f"modelc's {what}s: " + ", ".join(table))
    return name, Options(f"the {what} {written}", config, ignored=("name", "dtype"))


def _loss(value: Any) -> tuple[str, dict]:
    name, o = _catalog_entry(value, "loss", LOSSES, LOSS_ALIASES)
    o.require("reduction", ("sum_over_batch_size",), "modelc averages the loss over the batch "
              "(reduction='sum_over_batch_size')", default="sum_over_batch_size")
    o.require("axis", (-1,), "modelc's losses reduce the last axis (axis=-1)", default=-1)
    o.unset("ignore_class", why=_CHANGES_TRAINING)
    options = {p.name: o.take(p.name) for p in LOSSES[name].params if p.name in o.left}
    o.finish()
    return name, options


def _optimizer(value: Any) -> tuple[str, dict, tuple[str, dict] | None]:
    _, config, written = _named(value, "optimizer")
    name = written.lower()              # Adam -> adam, AdamW -> adamw, RMSprop -> rmsprop, SGD -> sgd
    if name not in OPTIMIZERS:
        raise ModelcError(f"the optimizer {written}: modelc has no such optimizer",
                          hint="modelc's optimizers: " + ", ".join(OPTIMIZERS))
    params = {p.name for p in OPTIMIZERS[name].params}
    o = Options(f"the optimizer {written}", config, ignored=("name",))
    if o.require("use_ema", (False,), "modelc keeps no moving average of the weights (use_ema=False)",
                 default=False) is False:
        o.drop("ema_momentum", "ema_overwrite_frequency")
    o.require("amsgrad", (False,), "modelc's Adam variants have no amsgrad (amsgrad=False)", default=False)
    o.require("centered", (False,), "modelc's rmsprop is not centered (centered=False)", default=False)
    o.unset("loss_scale_factor", "gradient_accumulation_steps", why=_CHANGES_TRAINING)
    if "weight_decay" not in params:
        o.unset("weight_decay", why=f"modelc's {name} has no weight decay; adamw has")
    rate = o.take("learning_rate", None)
    schedule = None
    if isinstance(rate, dict):
        rate, schedule = _schedule(rate)
    options = {"lr": rate}
    for key in list(o.left):
        if key in params:
            options[key] = o.take(key)
    o.finish()
    return name, options, schedule


def _schedule(value: dict) -> tuple[float, tuple[str, dict]]:
    name, config, written = _named(value, "learning-rate schedule")
    if name not in SCHEDULES or name == "constant":
        raise ModelcError(f"the learning-rate schedule {written}: modelc has no such schedule",
                          hint="modelc's schedules: " + ", ".join(s for s in SCHEDULES if s != "constant"))
    o = Options(f"the learning-rate schedule {written}", config, ignored=("name",))
    rate = o.number("initial_learning_rate")
    if o.number("warmup_steps", 0) != 0:
        raise o.refuse("warmup_steps", config["warmup_steps"], "modelc's cosine_decay has no warm-up")
    o.unset("warmup_target", why="modelc's cosine_decay has no warm-up")
    keys = {p.name for p in SCHEDULES[name]}
    options = {}
    for key in list(o.left):
        if _SCHEDULE_KEYS.get(key, key) in keys:
            options[_SCHEDULE_KEYS.get(key, key)] = o.take(key)
    o.finish()
    return rate, (name, options)


def _metrics(value: Any, notes: list[str]) -> list[tuple[str, dict]]:
    if value is None:
        return []
    if not isinstance(value, list):
        notes.append(f"the metrics {shown(value)} are left out: modelc reads a list of metrics")
        return []
    out = []
    for item in value:
        try:
            out.append(_metric(item))
        except ModelcError as e:
            notes.append(f"{e.message}; it is left out ({e.hint})")
    return out


def _metric(value: Any) -> tuple[str, dict]:
    name, o = _catalog_entry(value, "metric", METRICS, METRIC_ALIASES)
    o.unset("top_k", "class_id", why="modelc's precision and recall count every output")
    options = {}
    params = {p.name for p in METRICS[name].params}
    for key in list(o.left):
        if _METRIC_KEYS.get(key, key) in params and o.left[key] is not None:
            options[_METRIC_KEYS.get(key, key)] = o.take(key)
    o.finish()
    return name, options
