"""Checks and descriptions of the arrays a user hands to modelc.

Every entry point that takes user arrays (the `modelc.losses` functions, the
model's data binding, the data sources) checks them with these, so one
mistake reads the same wherever it is made.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from modelc.errors import ModelcError


def as_numbers(value: Any, what: str) -> np.ndarray:
    """`value` as a NumPy array of numbers, or a ModelcError that names `what`:
    the first check of every entry point that takes user arrays."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as e:
        raise ModelcError(f"{what}: not a rectangular array of numbers ({e})") from None
    if array.dtype.kind not in "biuf":
        raise ModelcError(f"{what}: must hold numbers, not {array.dtype}")
    return array


def format_dims(shape) -> str:
    """A shape as Python prints a tuple: (3,) or (32, 10)."""
    shape = tuple(shape)
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _index(i: tuple) -> str:
    return str(i[0]) if len(i) == 1 else str(tuple(int(k) for k in i))


def first_bad(a: np.ndarray) -> str:
    """The first value of `a` that is not a finite number, and where: "nan at index (0, 1)"."""
    i = np.unravel_index(int(np.argmax(~np.isfinite(a))), a.shape)
    return f"{a[i].item()!r} at index {_index(i)}"


def check_labels(y: np.ndarray, classes: int, where: str) -> None:
    """Raise if a class label lies outside [0, classes), naming the first offender and its index."""
    y = np.asarray(y)
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = np.unravel_index(int(np.argmax(bad)), y.shape)
            raise ModelcError(f"{where}: label {y[i].item()!r} at index {_index(i)} is not a whole number",
                              "class labels must be integers 0..classes-1")
    elif y.dtype.kind not in "iub":
        raise ModelcError(f"{where}: labels must be whole numbers, not {y.dtype}")
    bad = (y < 0) | (y >= classes)
    if bad.any():
        i = np.unravel_index(int(np.argmax(bad)), y.shape)
        value = y[i].item()
        raise ModelcError(
            f"{where}: label {value:g} at index {_index(i)} is out of range [0, {classes})",
            f"labels must be 0..{classes - 1}" + ("; are they numbered from 1?" if value == classes else ""))
