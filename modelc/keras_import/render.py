"""Writing spec text: numbers, option values and calls, with every option that equals
modelc's own default (read from modelc's declarations, `schema.Param.default`) left out."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from modelc.schema import REQUIRED, Param


def number(value: float | int) -> str:
    """A number as a spec writes it: the short form of a float32 value Keras kept (its
    learning rate 0.0010000000474974513 is `0.001`), else Python's exact repr."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = repr(float(value))
    short = str(np.float32(value))
    if len(short) < len(text) and float(np.float32(short)) == float(np.float32(value)) \
            and np.float32(value) == value:
        text = short
    return text


def value(v: Any) -> str:
    """An option's value: true/false, a number, a name, `[3, 5]`, or an activation call."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return number(v)
    if isinstance(v, str):
        return v
    if isinstance(v, (tuple, list)) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], dict):
        return call(v[0], v[1], activation_params(v[0]))    # (activation, its options)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(v)


def same(a: Any, b: Any) -> bool:
    """Whether an option equals a default (floats compared as float32: what the targets compute in)."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return np.float32(a) == np.float32(b)
    return a == b


def _is_default(param: Param, v: Any) -> bool:
    if param.default is REQUIRED:
        return False
    if param.kind == "pair" and isinstance(v, (tuple, list)) and len(set(v)) == 1 \
            and isinstance(param.default, (tuple, list)):
        return same(tuple(v), tuple(param.default))
    if param.name == "activation":
        return v[0] == param.default and not v[1]
    return same(v, param.default)


def call(name: str, options: dict[str, Any], params: Sequence[Param], by_position: bool = True) -> str:
    """`name(a, b, key=value)`: the leading required options (and a layer's activation right
    after them) by position unless `by_position` is false, the rest by keyword, each one
    equal to its default left out."""
    parts = arguments(options, params, by_position)
    return name + (f"({', '.join(parts)})" if parts else "")


def arguments(options: dict[str, Any], params: Sequence[Param], by_position: bool = False) -> list[str]:
    """The arguments `call` writes: ["64", "relu", "use_bias=false"]."""
    parts = []
    for param in params:
        if options.get(param.name) is None:      # not given: modelc's default
            by_position = False
            continue
        v = options[param.name]
        if _is_default(param, v):
            by_position = False
            continue
        text = value(_pair_short(param, v))
        if by_position and (param.default is REQUIRED or param.name == "activation"):
            parts.append(text)
        else:
            by_position = False
            parts.append(f"{param.name}={text}")
    return parts


def _pair_short(param: Param, v: Any) -> Any:
    """A pair of equal sizes as one number: `3` for [3, 3], as specs write it."""
    if param.kind == "pair" and isinstance(v, (tuple, list)) and len(v) == 2 and v[0] == v[1]:
        return v[0]
    return v


def activation_params(name: str) -> tuple[Param, ...]:
    from modelc.compiler.layers import LAYERS
    return LAYERS[name].params
