"""Every loss, callable on plain arrays or lists, as Keras's loss classes are:

    >>> import modelc
    >>> modelc.losses.categorical_crossentropy([[0, 1, 0], [0, 0, 1]],
    ...                                        [[0.05, 0.9, 0.05], [0.3, 0.2, 0.5]])
    0.39925...

Each returns the batch mean as a Python float, computed in float32 with the
same reference implementation the compiler's `numpy` target runs (the loss
primitives in `PRIMITIVES`): there is one implementation of each loss, and
these functions only check and shape their inputs. Names and aliases come
from the catalog (`mse`, `mae`, `huber`, `bce`, `cce`, `scce`, `kld`, ...),
options are keyword arguments (`from_logits=True`, `label_smoothing=0.1`,
`delta=1.0`), and any input mistake is a `ModelcError`.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from modelc.arrays import as_numbers, check_labels, format_dims
from modelc.compiler.catalog import LOSS_ALIASES, LOSSES, LossDef
from modelc.compiler.primitives import PRIMITIVES
from modelc.errors import ModelcError, did_you_mean
from modelc.schema import Param

__all__ = ["get", "names"] + list(LOSSES) + list(LOSS_ALIASES)


def _array(value: Any, what: str, dtype) -> np.ndarray:
    array = as_numbers(value, what)
    if array.ndim == 0:
        raise ModelcError(f"{what} is a single number; give one row per sample, e.g. [[0.5]]")
    if array.size == 0:
        raise ModelcError(f"{what} is empty")
    return array.astype(dtype, copy=False)


def _option(definition: LossDef, param: Param, value: Any) -> Any:
    what = f"{definition.name}: '{param.name}' must be {param.describe()}"
    if param.kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise ModelcError(what + f"; got {value!r}")
        return bool(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ModelcError(what + f"; got {value!r}")
    number = float(value)
    if param.low is not None and (number <= param.low if param.low_open else number < param.low):
        raise ModelcError(what + f"; got {value!r}")
    if param.high is not None and (number > param.high if param.high_closed else number >= param.high):
        raise ModelcError(what + f"; got {value!r}")
    return number


def _options(definition: LossDef, given: dict[str, Any]) -> dict[str, Any]:
    params = {p.name: p for p in definition.params}
    out = {p.name: p.default for p in definition.params}
    for key, value in given.items():
        if key not in params:
            suggestion = did_you_mean(key, params)
            known = ", ".join(params) or "none"
            raise ModelcError(f"{definition.name} has no option '{key}'"
                              + (f"; {suggestion}" if suggestion else ""), hint=f"its options: {known}")
        out[key] = _option(definition, params[key], value)
    return out


def _compute(definition: LossDef, y_true: Any, y_pred: Any, options: dict[str, Any]) -> float:
    prim = PRIMITIVES[definition.name]
    opts = _options(definition, options)
    p = _array(y_pred, "y_pred", np.float32)
    if definition.kind == "sparse":
        labels = _array(y_true, "y_true", None) if np.ndim(y_true) else np.asarray(y_true).reshape(1)
        if p.ndim == 1:
            p = p[None]
        if labels.ndim == p.ndim and labels.shape[-1] == 1 and p.shape[:-1] != labels.shape:
            labels = labels[..., 0]
        if labels.shape != p.shape[:-1]:
            raise ModelcError(
                f"{definition.name}: y_true has shape {format_dims(labels.shape)} but y_pred has shape "
                f"{format_dims(p.shape)}; sparse labels are one class index per row of y_pred",
                hint="for one-hot labels use categorical_crossentropy" if labels.shape == p.shape else None)
        check_labels(labels, p.shape[-1], f"{definition.name}: y_true")
        per = prim.impl(labels.reshape(-1).astype(np.int64), p.reshape(-1, p.shape[-1]), **opts)
    else:
        y = _array(y_true, "y_true", np.float32)
        if y.shape != p.shape:
            if y.size == p.size and tuple(d for d in y.shape if d != 1) == tuple(d for d in p.shape if d != 1):
                y = y.reshape(p.shape)     # (n,) against (n, 1), as Keras squeezes
            else:
                hint = None
                if definition.kind == "categorical" and y.ndim == p.ndim - 1:
                    hint = "for integer class labels use sparse_categorical_crossentropy"
                raise ModelcError(f"{definition.name}: y_true has shape {format_dims(y.shape)} but y_pred has "
                                  f"shape {format_dims(p.shape)}; they must match", hint=hint)
        if p.ndim == 1:                   # one sample
            y, p = y[None], p[None]
        if definition.kind in ("categorical", "distribution") and p.ndim > 2:
            y, p = y.reshape(-1, p.shape[-1]), p.reshape(-1, p.shape[-1])   # per row, as Keras
        per = prim.impl(y, p, **opts)
    per = np.asarray(per, dtype=np.float32).reshape(-1)
    return float(PRIMITIVES["mean"].impl(per))


def _make(definition: LossDef, name: str) -> Callable[..., float]:
    def loss(y_true, y_pred, **options) -> float:
        return _compute(definition, y_true, y_pred, options)
    loss.__name__ = loss.__qualname__ = name
    opts = ", ".join(f"{p.name}={p.default!r}" for p in definition.params)
    loss.__doc__ = (f"Keras's {definition.name}: the batch mean as a float (float32 math)."
                    + (f" Options: {opts}." if opts else "")
                    + (f" Also called: {', '.join(definition.aliases)}." if definition.aliases else ""))
    return loss


_FUNCTIONS: dict[str, Callable[..., float]] = {}
for _definition in LOSSES.values():
    for _name in (_definition.name, *_definition.aliases):
        _FUNCTIONS[_name] = _make(_definition, _name)
        globals()[_name] = _FUNCTIONS[_name]


def names() -> list[str]:
    """Every loss name and alias this module answers to."""
    return list(_FUNCTIONS)


def get(name: str) -> Callable[..., float]:
    """A loss function by its Keras name or an alias."""
    if name not in _FUNCTIONS:
        suggestion = did_you_mean(name, _FUNCTIONS)
        raise ModelcError(f"unknown loss '{name}'" + (f"; {suggestion}" if suggestion else ""),
                          hint=None if suggestion else "known losses: " + ", ".join(LOSSES))
    return _FUNCTIONS[name]


def __getattr__(name: str):
    suggestion = did_you_mean(name, _FUNCTIONS)
    raise AttributeError(f"modelc.losses has no loss {name!r}" + (f"; {suggestion}" if suggestion else ""))
