"""User data checked against the shapes the spec declares, before any backend sees it.

A mistake Keras would report deep in a stack trace ("Shapes (32, 1) and
(32, 10) are incompatible") is a `ModelcError` here that says what is wrong,
where the spec declared it, and what to do. What passes is what a backend
takes: float32 C-contiguous features, and int64 class indices or float32
targets.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from modelc.arrays import as_numbers, check_labels, first_bad, format_dims
from modelc.compiler.ir import format_shape
from modelc.errors import ModelcError


def _declared(program, decl) -> str:
    """Where the spec declares `decl`, as ' (spec.model:3)' for messages; '' when it has no line."""
    where = f"{program.spec.source.filename}:{decl.pos.line}" if decl.pos.line else ""
    return f" ({where})" if where else ""


def bind_x(program, x: Any, where: str) -> np.ndarray:
    """The features, float32 (samples, *declared input shape); `where` names the data in messages."""
    value = program.input
    decl = program.spec.inputs[0]
    x = as_numbers(x, f"{where}: the features")
    expected = tuple(value.shape[1:])
    if x.ndim >= 1 and expected[-1:] == (1,) and tuple(x.shape[1:]) == expected[:-1]:
        x = x[..., None]      # images without their unit channel axis: [28, 28] feeds f32[28, 28, 1]
    if x.ndim == 0 or tuple(x.shape[1:]) != expected:
        declared = f"'{value.name}: f32{format_shape(expected)}'"
        message = (f"{where}: the input is declared {declared}{_declared(program, decl)}, so the data "
                   f"must have shape (samples, {', '.join(map(str, expected))}), but it has shape "
                   f"{format_dims(x.shape)}")
        size = int(np.prod(expected))
        if tuple(x.shape) == expected:
            hint = "this is one sample: add the batch axis, x[None]"
        elif x.ndim >= 1 and int(np.prod(x.shape[1:])) == size:
            hint = (f"reshape it: x.reshape(len(x), {', '.join(map(str, expected))}), or declare "
                    f"the input as f32{format_shape(x.shape[1:])}")
        else:
            hint = f"declare the input as f32{format_shape(x.shape[1:])}, or fix the data"
        raise ModelcError(message, hint=hint)
    if len(x) == 0:
        raise ModelcError(f"{where}: there are no samples (shape {format_dims(x.shape)})")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ModelcError(f"{where}: the features hold a value that is not a finite number: "
                          f"{first_bad(x)}", hint="remove or fill the missing values first")
    return x


def bind_y(program, y: Any, samples: int, where: str) -> np.ndarray:
    """One label or target per sample in the declared target's format: int64 class indices
    (sparse), float32 one-hot rows, or float32 targets of the declared shape."""
    target = program.target
    if target is None:
        raise ModelcError(f"'{program.name}' has no loss, so it cannot be trained or evaluated",
                          hint="add a target and a loss to the spec")
    name = target.value.name
    decl = program.spec.targets[0]
    loss = program.loss_name
    y = as_numbers(y, f"{where}: the labels")
    if y.ndim == 0 or len(y) != samples:
        raise ModelcError(f"{where}: there are {samples} samples of features but the labels have shape "
                          f"{format_dims(y.shape)}", hint="give one label per sample")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ModelcError(f"{where}: the labels hold a value that is not a finite number: {first_bad(y)}")
    classes = target.classes
    if target.format == "sparse":
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim == 2:
            raise ModelcError(
                f"{where}: the labels have shape {format_dims(y.shape)}, one-hot vectors, but the target "
                f"'{name}' is declared as integer class labels (int[] classes {classes})"
                f"{_declared(program, decl)} and the loss is {loss}",
                hint=f"pass the class indices (y.argmax(axis=1)), or declare the target one-hot, "
                f"'target {name}: f32[{y.shape[1]}] onehot', and use categorical_crossentropy")
        if y.ndim != 1:
            raise ModelcError(f"{where}: class labels must be one number per sample, but they have "
                              f"shape {format_dims(y.shape)}")
        check_labels(y, classes, where)
        return np.ascontiguousarray(y, dtype=np.int64)
    if target.format == "onehot":
        flat = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
        if flat.ndim == 1:
            whole = y.dtype.kind in "biu" or bool(np.all(flat == np.round(flat)))
            what = "integer class labels" if whole else "one number per sample"
            raise ModelcError(
                f"{where}: the labels have shape {format_dims(y.shape)}, {what}, but the target '{name}' "
                f"is declared one-hot (f32[{classes}] onehot){_declared(program, decl)} "
                f"and the loss is {loss}",
                hint=(f"one-hot them (modelc.runtime.data.one_hot(y, {classes}), or onehot=true in the "
                      f"data source), or declare 'target {name}: int[] classes {classes}' and use "
                      "sparse_categorical_crossentropy"))
        if tuple(y.shape[1:]) != (classes,):
            raise ModelcError(f"{where}: the labels have shape {format_dims(y.shape)}, but the target '{name}' "
                              f"is declared f32[{classes}] onehot{_declared(program, decl)}",
                              hint=f"give {classes} entries per sample, or change the declaration")
        return np.ascontiguousarray(y, dtype=np.float32)
    expected = tuple(target.value.shape[1:])
    if y.ndim == 1 and expected == (1,):
        y = y[:, None]
    if tuple(y.shape[1:]) != expected:
        raise ModelcError(f"{where}: the targets have shape {format_dims(y.shape)}, but '{name}' is declared "
                          f"f32{format_shape(expected)}{_declared(program, decl)}",
                          hint=f"give targets of shape (samples, {', '.join(map(str, expected))}), "
                          "or change the declaration")
    return np.ascontiguousarray(y, dtype=np.float32)


def bind(program, x: Any, y: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels (or targets) for `program`; `where` names the data in messages."""
    x = bind_x(program, x, where)
    return x, bind_y(program, y, len(x), where)
