"""The spec's `train` and `expect` sections: settings checked against the spec's lines.

`settings(spec)` turns the `train { ... }` lines into a `TrainSettings` (no data
is read: the data source call is only bound, so `modelc check` can vet it).
`check_static` rejects, before any training, unknown splits and metrics, a
callback watching a value that is never logged, and a data source whose labels
cannot feed the target; `evaluate_expectations` compares results after
training and reports each expectation with its spec line, as a person would
write it. `make_callbacks` builds the `callbacks [...]` line's objects.
"""
from __future__ import annotations

import inspect
import math
import operator
from dataclasses import dataclass, field
from typing import Any

from modelc.errors import ModelcError, SpecError, did_you_mean, unknown
from modelc.files import spec_relative
from modelc.grammar import ast

# Keras's fit() defaults, used when the spec leaves a setting out.
DEFAULT_BATCH = 32
DEFAULT_EPOCHS = 1

SETTINGS = ("data", "batch", "epochs", "shuffle", "seed", "validate", "schedule", "callbacks")
SETTING_ALIASES = {"batch_size": "batch", "validation": "validate", "data_source": "data"}
SPLITS = ("train", "val", "test")
COMPARISONS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}


@dataclass
class TrainSettings:
    """The `train` section, checked. `validate` is "none", "test" or a float fraction."""
    data: Any = None                   # a data.BoundSource, or None when the spec names no data
    batch: int = DEFAULT_BATCH
    epochs: int = DEFAULT_EPOCHS
    shuffle: bool = True
    seed: int = 0
    validate: str | float = "none"
    callbacks: list = field(default_factory=list)   # (name, options, ast.Call) per callbacks [...] entry
    positions: dict[str, ast.Pos] = field(default_factory=dict)   # setting -> where it was written

    @property
    def validation_split(self) -> float | None:
        return self.validate if isinstance(self.validate, float) else None


def _int(setting: ast.Setting, low: int, what: str) -> int:
    value = setting.value
    if (not isinstance(value, ast.Number) or isinstance(value, ast.Bool)
            or not float(value.value).is_integer() or value.value < low or value.value >= 2 ** 31):
        raise SpecError(f"'{setting.key.name}' must be {what}", _pos(setting))
    return int(value.value)


def _pos(setting: ast.Setting) -> ast.Pos:
    pos = getattr(setting.value, "pos", None)
    return pos if pos is not None and pos.line else setting.pos


def _fraction(value: ast.Literal, where: ast.Pos) -> float:
    if isinstance(value, ast.Number) and not isinstance(value, ast.Bool) and 0 < value.value < 1:
        return float(value.value)
    raise SpecError("a validation split is a fraction of the training data between 0 and 1, "
                    "like split(0.1)", where)


def _validate(setting: ast.Setting) -> str | float:
    value = setting.value
    if isinstance(value, ast.Bool):
        if value.value:
            raise SpecError("'validate true' is ambiguous", _pos(setting),
                            hint="write 'validate test', 'validate split(0.1)' or 'validate none'")
        return "none"
    if isinstance(value, ast.Ident):
        if value.name in ("test", "none"):
            return value.name
        if value.name == "split":
            raise SpecError("split needs the fraction to hold out", value.pos, hint="write split(0.1)")
        raise unknown("validation", value.name, ("test", "none", "split"), value.pos)
    if isinstance(value, ast.Number):
        return _fraction(value, value.pos)
    if isinstance(value, ast.Call):
        if value.name.name != "split":
            raise unknown("validation", value.name.name, ("test", "none", "split"), value.name.pos)
        if len(value.args) != 1:
            raise SpecError("split takes one fraction, like split(0.1)", value.pos)
        arg = value.args[0]
        if arg.key is not None and arg.key.name not in ("fraction", "rate"):
            raise SpecError(f"split has no option '{arg.key.name}'", arg.key.pos, hint="write split(0.1)")
        return _fraction(arg.value, getattr(arg.value, "pos", value.pos))
    raise SpecError("validate must be test, none, or split(fraction)", _pos(setting))


def settings(spec: ast.Spec) -> TrainSettings:
    """Check the `train` section; binds (but does not load) the data source."""
    try:
        return _settings(spec)
    except SpecError as err:
        raise err.located(spec.source)


def _settings(spec: ast.Spec) -> TrainSettings:
    from modelc.runtime import data as data_sources

    out = TrainSettings()
    seen: dict[str, ast.Setting] = {}
    for setting in spec.train:
        key = SETTING_ALIASES.get(setting.key.name, setting.key.name)
        if key not in SETTINGS:
            suggestion = did_you_mean(setting.key.name, SETTINGS)
            raise SpecError(f"unknown training setting '{setting.key.name}'"
                            + (f"; {suggestion}" if suggestion else ""), setting.key.pos,
                            hint=None if suggestion else "the train section knows: " + ", ".join(SETTINGS))
        if key in seen:
            raise SpecError(f"'{key}' is set twice (first at line {seen[key].pos.line})", setting.key.pos,
                            hint="keep one of them")
        seen[key] = setting
        out.positions[key] = setting.pos
        value = setting.value
        if key == "data":
            if isinstance(value, ast.Ident):
                value = ast.Call(value, [], value.pos)
            if not isinstance(value, ast.Call):
                raise SpecError("data must name a data source, like mnist(scale=1/255)", _pos(setting),
                                hint="sources: " + ", ".join(sorted(data_sources.DATA_SOURCES)))
            out.data = data_sources.bind_source(value)
        elif key == "batch":
            out.batch = _int(setting, 1, "a whole number of samples, at least 1")
        elif key == "epochs":
            out.epochs = _int(setting, 1, "a whole number, at least 1")
        elif key == "seed":
            out.seed = _int(setting, 0, "a whole number, 0 or more")
        elif key == "shuffle":
            if not isinstance(value, ast.Bool):
                raise SpecError("'shuffle' must be true or false", _pos(setting))
            out.shuffle = value.value
        elif key == "validate":
            out.validate = _validate(setting)
        elif key == "callbacks":
            out.callbacks = _callbacks(setting)
        # "schedule" is the compiler's: build_program binds and checks it.
    return out


# ---------------------------------------------------------------- callbacks

_MONITOR = ("monitor", "name")
_MODE = ("mode", "name", ("auto", "min", "max"))
# What a spec may set on each callback, and the kind of each option; the defaults are the
# classes' own (modelc.runtime.callbacks), read from their signatures.
CALLBACK_OPTIONS = {
    "early_stopping": (_MONITOR, ("min_delta", "float", None, 0.0), ("patience", "int", None, 0), _MODE,
                       ("baseline", "float"), ("restore_best_weights", "bool"), ("start_from_epoch", "int", None, 0),
                       ("verbose", "int", None, 0)),
    "reduce_lr_on_plateau": (_MONITOR, ("factor", "float", None, 0.0), ("patience", "int", None, 0), _MODE,
                             ("min_delta", "float", None, 0.0), ("cooldown", "int", None, 0),
                             ("min_lr", "float", None, 0.0), ("verbose", "int", None, 0)),
    "model_checkpoint": (("filepath", "str"), _MONITOR, ("save_best_only", "bool"), _MODE, ("verbose", "int", None, 0)),
    "csv_logger": (("filename", "str"), ("separator", "str"), ("append", "bool")),
    "checkpoint": (("dir", "str"), _MONITOR, _MODE),
    "terminate_on_nan": (),
}
CALLBACK_ALIASES = {"reduce_lr": "reduce_lr_on_plateau", "earlystopping": "early_stopping",
                    "csv_log": "csv_logger", "checkpoints": "checkpoint"}
_PATH_OPTIONS = ("filepath", "filename", "dir")


def _callback_params(name: str):
    from modelc.runtime.callbacks import SPEC_CALLBACKS, options
    from modelc.schema import REQUIRED, Param
    defaults = options(SPEC_CALLBACKS[name])
    params = []
    for option in CALLBACK_OPTIONS[name]:
        key, kind, *rest = option
        default = defaults[key]
        params.append(Param(key, kind, REQUIRED if default is inspect.Parameter.empty else default,
                            choices=rest[0] if rest and kind == "name" else None,
                            low=rest[1] if len(rest) > 1 else None))
    return params


def _callbacks(setting: ast.Setting) -> list:
    """`callbacks [early_stopping(patience=3), ...]` (or one callback alone), each bound and checked."""
    from modelc.schema import bind_call
    value = setting.value
    items = value.items if isinstance(value, ast.ListLit) else [value]
    out = []
    for item in items:
        if isinstance(item, ast.Ident):
            item = ast.Call(item, [], item.pos)
        if not isinstance(item, ast.Call):
            raise SpecError("callbacks names callbacks, like [early_stopping(patience=3), "
                            "checkpoint(dir=\"runs\")]", getattr(item, "pos", None) or _pos(setting))
        name = CALLBACK_ALIASES.get(item.name.name, item.name.name)
        if name not in CALLBACK_OPTIONS:
            raise unknown("callback", item.name.name, list(CALLBACK_OPTIONS) + list(CALLBACK_ALIASES),
                          item.name.pos)
        out.append((name, bind_call(item, _callback_params(name), name), item))
    return out


def logged_names(result_names: list[str], train: TrainSettings) -> list[str]:
    """What each epoch logs: the loss and metrics, and their val_ twins when there is validation."""
    return list(result_names) + (["val_" + n for n in result_names] if train.validate != "none" else [])


def _check_callbacks(spec: ast.Spec, result_names: list[str], train: TrainSettings) -> None:
    """Each callback's monitor must be a value the run logs."""
    logged = logged_names(result_names, train)
    for name, opts, call in train.callbacks:
        monitor = opts.get("monitor")
        if monitor is None or monitor in logged or (name == "checkpoint" and monitor is None):
            continue
        pos = next((a.value.pos for a in call.keywords if a.key.name == "monitor"), call.pos)
        hint = (f"this run logs: {', '.join(logged)}" if not monitor.startswith("val_") or train.validate != "none"
                else "add 'validate test' or 'validate split(0.1)' to train { } to log val_ values")
        err = unknown("logged value", monitor, logged, pos)
        err.hint = err.hint if did_you_mean(monitor, logged) else hint
        raise err.located(spec.source)


def make_callbacks(train: TrainSettings, spec: ast.Spec, base_dir: str | None) -> list:
    """The spec's callbacks, built; file paths resolve against the spec's folder, like data files."""
    from modelc.runtime.callbacks import SPEC_CALLBACKS
    out = []
    for name, opts, call in train.callbacks:
        opts = dict(opts)
        for key in _PATH_OPTIONS:
            if key in opts:
                opts[key] = str(spec_relative(opts[key], base_dir))
        try:
            out.append(SPEC_CALLBACKS[name](**opts))
        except ModelcError as err:
            raise SpecError(err.message, call.pos, spec.source, hint=err.hint) from None
    return out


def output_paths(train: TrainSettings, base_dir: str | None) -> list[tuple[str, str]]:
    """The files and folders the spec's callbacks write, as (what, path), for the CLI's checks."""
    out = []
    for name, opts, _ in train.callbacks:
        for key in _PATH_OPTIONS:
            if key in opts:
                out.append((f"{name}({key}=...)", str(spec_relative(opts[key], base_dir))))
    return out


def check_static(program, train: TrainSettings) -> None:
    """Everything about the train and expect sections that is known before any data is read."""
    from modelc.runtime import data as data_sources
    check_expectations_static(program.spec, program.shown_names, train)
    _check_callbacks(program.spec, program.shown_names, train)
    if train.data is not None:
        try:
            data_sources.check_static(train.data, program)
        except SpecError as err:
            raise err.located(program.spec.source)


# ---------------------------------------------------------------- expectations

def _metric_names(result_names: list[str]) -> dict[str, str]:
    """Names an expectation may use for each result (Keras's aliases included)."""
    from modelc.compiler.catalog import METRIC_ALIASES
    names = {n: n for n in result_names}
    for alias, canonical in METRIC_ALIASES.items():
        if canonical in names:
            names.setdefault(alias, canonical)
    return names


def check_expectations_static(spec: ast.Spec, result_names: list[str], train: TrainSettings) -> None:
    """Unknown split or metric, or `val.X` without validation: located SpecErrors, before training."""
    names = _metric_names(result_names)
    for e in spec.expect:
        if e.split.name not in SPLITS:
            raise unknown("split", e.split.name, SPLITS, e.split.pos).located(spec.source)
        if e.metric.name not in names:
            err = unknown("result", e.metric.name, names, e.metric.pos)
            if not did_you_mean(e.metric.name, names):
                err.hint = f"this spec computes: {', '.join(result_names)} (add metrics to the 'metrics' line)"
            raise err.located(spec.source)
        if e.split.name == "val" and train.validate == "none":
            raise SpecError(f"'{e.split.name}.{e.metric.name}' needs validation, but the train section "
                            "has none", e.split.pos, spec.source,
                            hint="add 'validate test' or 'validate split(0.1)' to train { }, "
                            "or expect test.X instead")
        if isinstance(e.value.value, float) and not math.isfinite(e.value.value):
            raise SpecError("an expectation needs a finite number", e.value.pos, spec.source)


@dataclass
class ExpectationResult:
    expectation: ast.Expectation
    value: float
    passed: bool
    filename: str

    @property
    def text(self) -> str:
        e = self.expectation
        return f"{e.split.name}.{e.metric.name} {e.op} {e.value.text}"

    def __str__(self) -> str:
        where = f"{self.filename}:{self.expectation.pos.line}"
        return f"{where}: {self.text} {'ok' if self.passed else 'failed'}: {self.value:.4f}"


def evaluate_expectations(spec: ast.Spec, result_names: list[str],
                          results: dict[str, dict[str, float] | None]) -> list[ExpectationResult]:
    """Compare `results` ({"train": {...}, "val": {...}, "test": {...}}) with the `expect` section."""
    names = _metric_names(result_names)
    out = []
    for e in spec.expect:
        if e.split.name not in SPLITS:
            raise unknown("split", e.split.name, SPLITS, e.split.pos).located(spec.source)
        if e.metric.name not in names:
            raise unknown("result", e.metric.name, names, e.metric.pos).located(spec.source)
        split = results.get(e.split.name)
        if split is None:
            why = {"val": "no validation was run", "test": "the data has no test split",
                   "train": "no training was run"}[e.split.name]
            raise SpecError(f"cannot check {e.split.name}.{e.metric.name}: {why}", e.split.pos, spec.source)
        value = float(split[names[e.metric.name]])
        passed = bool(COMPARISONS[e.op](value, float(e.value.value)))
        out.append(ExpectationResult(e, value, passed, spec.source.filename))
    return out
