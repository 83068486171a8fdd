"""Checking the arguments of a call in a spec against a declared signature.

Layers, losses, optimizers, schedules and data sources are all written as
`name(positional, key=value)`. Each declares its parameters once as a list of
`Param`; `bind_call` turns the AST call into a plain dict of Python values or
raises a located `SpecError` naming the parameter and what it accepts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from modelc.compiler.limits import MAX_FLOAT32
from modelc.errors import SpecError, did_you_mean, unknown
from modelc.grammar import ast

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    name: str
    kind: str                      # int | float | bool | str | name | ints | pair (n or [h, w]) | dims (n or [d, ...])
    default: Any = REQUIRED
    choices: Sequence[str] | None = None   # for kind == "name"
    low: float | None = None       # inclusive unless low_open
    high: float | None = None      # exclusive unless high_closed
    low_open: bool = False
    high_closed: bool = False
    doc: str = ""
    aliases: dict[str, str] | None = None  # for kind == "name": alias -> canonical

    def describe(self) -> str:
        if self.kind == "name" and self.choices:
            return "one of " + ", ".join(sorted(self.choices))
        words = {"int": "a whole number", "float": "a number", "bool": "true or false",
                 "str": "a quoted string", "ints": "a list of whole numbers like [28, 28]",
                 "name": "a name", "pair": "a whole number or [height, width]",
                 "dims": "a whole number or a shape like [8, 8, 1]"}[self.kind]
        if self.low is not None or self.high is not None:
            lo = "" if self.low is None else (f"> {self.low:g}" if self.low_open else f">= {self.low:g}")
            hi = "" if self.high is None else (f"<= {self.high:g}" if self.high_closed else f"< {self.high:g}")
            words += " " + " and ".join(x for x in (lo, hi) if x)
        return words


def _convert(param: Param, value: ast.Literal, what: str) -> Any:
    pos = getattr(value, "pos", None)

    def wrong() -> SpecError:
        return SpecError(f"{what}: '{param.name}' must be {param.describe()}", pos)

    if param.kind in ("int", "float"):
        if isinstance(value, ast.Bool) or not isinstance(value, ast.Number):
            raise wrong()
        number = value.value
        if param.kind == "int":
            if isinstance(number, float) and not number.is_integer():
                raise wrong()
            number = int(number)
        else:
            number = float(number)
            if abs(number) > MAX_FLOAT32:
                raise SpecError(f"{what}: '{param.name}' is {value.text}, too large for float32, the type "
                                f"targets compute in (at most {MAX_FLOAT32:g} in size)", pos,
                                hint=f"give {param.describe()} that fits float32")
        if param.low is not None and (number <= param.low if param.low_open else number < param.low):
            raise wrong()
        if param.high is not None and (number > param.high if param.high_closed else number >= param.high):
            raise wrong()
        return number
    if param.kind == "bool":
        if not isinstance(value, ast.Bool):
            raise wrong()
        return value.value
    if param.kind == "str":
        if not isinstance(value, ast.String):
            raise wrong()
        return value.value
    if param.kind == "name":
        if isinstance(value, ast.String):
            name = value.value
        elif isinstance(value, ast.Ident):
            name = value.name
        else:
            raise wrong()
        if param.aliases and name in param.aliases:
            name = param.aliases[name]
        if param.choices is not None and name not in param.choices:
            known = list(param.choices) + list(param.aliases or ())
            raise unknown(param.doc or param.name, name, known, pos)
        return name
    if param.kind == "pair":
        items = value.items if isinstance(value, ast.ListLit) else [value]
        if len(items) not in (1, 2) or not all(
                isinstance(v, ast.Number) and not isinstance(v, ast.Bool) and float(v.value).is_integer()
                for v in items):
            raise wrong()
        pair = tuple(int(v.value) for v in items) * (2 if len(items) == 1 else 1)
        if param.low is not None and min(pair) < param.low:
            raise SpecError(f"{what}: '{param.name}' must be at least {param.low:g}, got "
                            f"{list(pair) if isinstance(value, ast.ListLit) else pair[0]}", pos)
        return pair
    if param.kind == "dims" and isinstance(value, ast.Number):
        return (_convert(Param(param.name, "int", low=1), value, what),)
    if param.kind in ("ints", "dims"):
        if not isinstance(value, ast.ListLit):
            raise wrong()
        out = []
        for item in value.items:
            if not isinstance(item, ast.Number) or isinstance(item.value, float) or item.value <= 0:
                raise SpecError(f"{what}: '{param.name}' must be {param.describe()} (positive)",
                                getattr(item, "pos", pos))
            out.append(int(item.value))
        return tuple(out)
    raise AssertionError(param.kind)


def bind_call(call: ast.Call, params: Sequence[Param], what: str | None = None,
              extra_check: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Match `call`'s arguments to `params` (positional in order, then by keyword)."""
    what = what or call.name.name
    bound: dict[str, Any] = {}
    positional = call.positional
    if len(positional) > len(params):
        extra = positional[len(params)]
        names = ", ".join(p.name for p in params) or "no arguments"
        raise SpecError(f"{what} takes at most {len(params)} positional argument(s) ({names})",
                        extra.pos)
    for param, arg in zip(params, positional):
        bound[param.name] = _convert(param, arg.value, what)
    by_name = {p.name: p for p in params}
    for arg in call.keywords:
        key = arg.key.name
        if key not in by_name:
            suggestion = did_you_mean(key, by_name)
            message = f"{what} has no option '{key}'" + (f"; {suggestion}" if suggestion else "")
            hint = None if suggestion else (
                "its options are: " + ", ".join(by_name) if by_name else f"{what} takes no options")
            raise SpecError(message, arg.key.pos, hint=hint)
        if key in bound:
            raise SpecError(f"{what}: '{key}' is given twice", arg.key.pos)
        bound[key] = _convert(by_name[key], arg.value, what)
    for param in params:
        if param.name not in bound:
            if param.default is REQUIRED:
                raise SpecError(f"{what} needs '{param.name}' ({param.describe()})", call.pos,
                                hint=f"write {what}({', '.join(p.name for p in params if p.default is REQUIRED)}, ...)")
            bound[param.name] = param.default
    if extra_check:
        extra_check(bound)
    return bound
