"""Checks and descriptions of the arrays a user hands to modelc.

Every entry point that takes user arrays (the `modelc.losses` functions, the
model's data binding, the data sources) checks them with these, so one
mistake reads the same wherever it is made.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from modelc.errors import ModelcError

MAX_DATA_BYTES = 2 << 30    # the most one data set, generated data or file member may take in memory


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


def _index(i: tuple, first: int = 0) -> str:
    return str(int(i[0]) + first) if len(i) == 1 else str(tuple(int(k) + first for k in i))


def first_bad(a: np.ndarray) -> str:
    """The first value of `a` that is not a finite number, and where: "nan at index (0, 1)"."""
    i = np.unravel_index(int(np.argmax(~np.isfinite(a))), a.shape)
    return f"{a[i].item()!r} at index {_index(i)}"


def _number(value) -> str:
    """A label for messages: integers exactly (2**63 - 1, not 9.22e+18), whole floats without '.0'
    while exact (7.0 as 7), larger floats short (1e+19)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) <= 2 ** 53 else f"{value:.7g}"
    return str(value)


def check_labels(y: np.ndarray, classes: int, where: str, unit: str = "index", first: int = 0) -> None:
    """Raise if a class label lies outside 0..classes-1, naming the first offender and where it is.

    The comparison is exact (integers) or in float64, never after a cast that could wrap a
    huge label into range; `unit` and `first` say how positions are counted ("data row", 1).
    """
    y = np.asarray(y)
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = np.unravel_index(int(np.argmax(bad)), y.shape)
            raise ModelcError(f"{where}: label {y[i].item()!r} at {unit} {_index(i, first)} is not a whole number",
                              f"class labels must be whole numbers 0..{classes - 1}")
    elif y.dtype.kind not in "iub":
        raise ModelcError(f"{where}: labels must be whole numbers, not {y.dtype}")
    bad = (y < 0) | (y >= classes)
    if bad.any():
        i = np.unravel_index(int(np.argmax(bad)), y.shape)
        value = y[i].item()
        raise ModelcError(
            f"{where}: label {_number(value)} at {unit} {_index(i, first)} is out of range [0, {classes})",
            f"labels must be 0..{classes - 1}" + ("; are they numbered from 1?" if value == classes else ""))


def gib(nbytes: int) -> str:
    """A size for messages: '7.45 GiB', '12 MiB'."""
    return f"{nbytes / (1 << 30):.3g} GiB" if nbytes >= 1 << 30 else f"{nbytes / (1 << 20):.3g} MiB"


def machine_memory() -> int | None:
    """The machine's physical memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_size(nbytes: int, what: str, hint: str | None = None) -> None:
    """Refuse to build or unpack `nbytes` (an exact int) beyond MAX_DATA_BYTES or the machine's memory,
    before anything is allocated: a typo in a size must be a message, not a MemoryError or a swap storm."""
    memory = machine_memory()
    if nbytes > MAX_DATA_BYTES:
        limit = f"modelc's limit of {gib(MAX_DATA_BYTES)} for data read or made in one piece"
    elif memory is not None and nbytes > memory:
        limit = f"this machine's {gib(memory)} of memory"
    else:
        return
    raise ModelcError(f"{what} would need {gib(nbytes)} of memory, more than {limit}", hint)
