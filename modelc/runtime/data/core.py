"""The shapes every data source returns, and the small conversions they share.

Sources differ in where bytes come from; what they hand to the runtime is
always the same: float32 C-contiguous features and either int64 class
indices or float32 targets, so the compiled model never has to guess.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelc.arrays import check_labels, check_size, first_bad
from modelc.errors import ModelcError, SpecError
from modelc.files import spec_relative
from modelc.grammar import ast

INT64_MAX = np.iinfo(np.int64).max


@dataclass
class Dataset:
    """One split: `x` float32 (n, *sample_shape); `y` int64 (n,) labels or float32 targets."""
    x: np.ndarray
    y: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        # Normalise here so arrays a Python user builds by hand obey the same contract.
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        y = np.asarray(self.y)
        if y.dtype.kind in "iu":
            y = y.astype(np.int64, copy=False)
        else:
            y = y.astype(np.float32, copy=False)
        self.y = np.ascontiguousarray(y)
        if self.x.ndim == 0 or self.y.ndim == 0 or len(self.x) != len(self.y):
            raise ModelcError(
                f"data set {self.name or '(unnamed)'}: features have shape {self.x.shape} but "
                f"labels have shape {self.y.shape}; both need the same number of samples first")

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Splits:
    """The training split and, when the source has one, its own held-out test split."""
    train: Dataset
    test: Dataset | None = None


@dataclass
class LoadContext:
    """What a source's loader may use besides its options: folders, verbosity, blame."""
    call: ast.Call
    params: list = field(default_factory=list)
    data_dir: str | None = None
    base_dir: str | None = None
    quiet: bool = False
    program: Any = None         # the compiled spec, when known: its input shape is checked up front

    def say(self, message: str) -> None:
        """Progress notes go to stderr so stdout stays clean for results."""
        if not self.quiet:
            print(f"modelc: {message}", file=sys.stderr, flush=True)

    def resolve(self, path: str) -> Path:
        """Relative paths are relative to the spec's folder, not to where modelc runs."""
        return spec_relative(path, self.base_dir)

    def arg_pos(self, name: str) -> ast.Pos:
        return arg_pos(self.call, self.params, name)

    def fail(self, arg: str | None, message: str, hint: str | None = None) -> ModelcError:
        """An error about an option: located at it when the call came from a spec file."""
        return blame(self.arg_pos(arg) if arg else self.call.pos, message, hint)


def blame(pos: ast.Pos | None, message: str, hint: str | None = None) -> ModelcError:
    """A SpecError at `pos` when it is a real place in a spec (the caller attaches the source),
    else a plain ModelcError: a call built in Python has no line to point at."""
    if pos is not None and pos.line > 0:
        return SpecError(message, pos, hint=hint)
    return ModelcError(message, hint)


def arg_pos(call: ast.Call, params: list, name: str) -> ast.Pos:
    """Where option `name` was written (keyword or positional), else the call itself."""
    for arg in call.keywords:
        if arg.key.name == name:
            return arg.value.pos if arg.value.pos.line else arg.pos
    names = [p.name for p in params]
    if name in names:
        index = names.index(name)
        positional = call.positional
        if index < len(positional):
            return positional[index].value.pos if positional[index].value.pos.line else positional[index].pos
    return call.pos


def scaled(a: np.ndarray, scale: float) -> np.ndarray:
    """float32 features `a * scale`, rounded once from float64.

    For bytes a 256-entry table gives exactly what `x.astype('float32') / 255`
    gives in Keras for scale=1/255, without a 60000x784 float64 temporary.
    """
    a = np.asarray(a)
    if a.dtype == np.uint8:
        table = (np.arange(256, dtype=np.float64) * scale).astype(np.float32)
        return np.ascontiguousarray(table[a])
    if a.dtype == np.int8:
        table = (np.arange(-128, 128, dtype=np.float64) * scale).astype(np.float32)
        return np.ascontiguousarray(table[a.astype(np.int16) + 128])
    if a.dtype.kind not in "biuf":
        raise ModelcError(f"features must be numbers, not {a.dtype}")
    if scale == 1.0:
        return np.ascontiguousarray(a, dtype=np.float32)
    return np.ascontiguousarray(np.multiply(a, scale, dtype=np.float64).astype(np.float32))


def one_hot(labels: np.ndarray, classes: int, where: str = "labels") -> np.ndarray:
    """Class indices (n,) -> float32 (n, classes), after checking they fit (and that the rows fit in memory)."""
    labels = np.asarray(labels)
    check_labels(labels, classes, where)
    check_size(labels.size * classes * 4, f"{where}: one-hot rows of {classes} classes",
               "labels must be 0..classes-1; give the number of classes with classes=N")
    out = np.zeros((labels.size, classes), np.float32)
    out[np.arange(labels.size), labels.reshape(-1).astype(np.int64)] = 1.0
    return out.reshape(labels.shape + (classes,))


def labels_or_targets(y: np.ndarray, where: str) -> np.ndarray:
    """Integer arrays become int64 class labels; anything numeric else stays float targets."""
    y = np.asarray(y)
    if y.dtype.kind == "u" and y.size and y.max() > INT64_MAX:      # would wrap to a negative label
        i = np.unravel_index(int(np.argmax(y > INT64_MAX)), y.shape)
        raise ModelcError(f"{where}: label {y[i].item()} at index {i[0] if len(i) == 1 else i} is too large "
                          "to be a class label", "class labels must be 0..classes-1")
    if y.dtype.kind in "iu":
        return np.ascontiguousarray(y, dtype=np.int64)
    if y.dtype.kind in "bf":      # float64 stays exact until Dataset, so a label check shows the value as stored
        return np.ascontiguousarray(y, dtype=np.float64 if y.dtype == np.float64 else np.float32)
    raise ModelcError(f"{where}: labels must be numbers, not {y.dtype}")


def finish_labels(y: np.ndarray, *, onehot: bool, classes: int, where: str, unit: str = "index",
                  first: int = 0) -> np.ndarray:
    """Apply `classes` (a range check) and `onehot` the way every file source does.

    The caller infers `classes` for onehot when the user gave none, over train
    and test together, so both splits get the same width.
    """
    if not (onehot or classes):
        return y
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ModelcError(f"{where}: class labels must be one number per sample, got shape {y.shape}",
                          "drop onehot/classes for targets that are already vectors")
    check_labels(y, classes, where, unit, first)
    y = np.ascontiguousarray(y, dtype=np.int64)
    return one_hot(y, classes, where) if onehot else y


def infer_classes(*ys: Any) -> int:
    """Enough classes for every label seen (max + 1), for onehot without `classes`."""
    tops = []
    for y in ys:
        y = None if y is None else np.asarray(y)
        if y is not None and y.size:
            tops.append(int(np.max(np.where(np.isfinite(y), y, 0))) if y.dtype.kind == "f" else int(y.max()))
    return max(max(tops) + 1, 1) if tops else 1


def check_finite(x: np.ndarray, where: str) -> None:
    """NaN or inf in features would silently poison training: refuse them up front."""
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ModelcError(f"{where}: value {first_bad(x)} is not a finite number")
