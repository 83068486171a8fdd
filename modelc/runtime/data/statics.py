"""What a data source's options alone say about its data, checked against the spec before any
data is read or generated (`modelc check`, and before training).

The rules mirror what `modelc.runtime.binding` accepts once the data is there,
so a spec that binds its data is never refused here, and one that cannot is
refused with the data call's line instead of after minutes of loading.
"""
from __future__ import annotations

from dataclasses import dataclass

from modelc.compiler.ir import format_shape
from modelc.grammar import ast

from .core import arg_pos, blame


@dataclass(frozen=True)
class Labels:
    """A source's labels: "sparse" class indices, "onehot" rows, real "targets" (n, 1), or
    "binary" 0/1 floats (n, 1); `classes` where the options tell."""
    format: str
    classes: int | None = None


def classes(opts: dict, count: int | None) -> Labels:
    """Class labels, one-hot when the source's `onehot` option is on."""
    return Labels("onehot" if opts.get("onehot") else "sparse", count)


def _fits(dims: tuple, expected: tuple) -> bool:
    """As binding: equal, or images without their unit channel axis ([28, 28] feeds f32[28, 28, 1])."""
    return dims == expected or (expected[-1:] == (1,) and dims == expected[:-1])


def check_features(name: str, dims: tuple, program, call: ast.Call, params: list) -> None:
    """The source's per-sample feature shape against the declared input, before any data exists."""
    expected = tuple(program.input.shape[1:])
    dims = tuple(dims)
    if _fits(dims, expected):
        return
    written = any(a.key.name == "features" for a in call.keywords) or "features" in [
        p.name for p, _ in zip(params, call.positional)]
    option = "features" if any(p.name == "features" for p in params) else "flatten"
    raise blame(arg_pos(call, params, option) if written or option == "flatten" else call.pos,
                f"{name} gives samples of shape {format_shape(dims)}, but the input '{program.input.name}' "
                f"is declared f32{format_shape(expected)}",
                (f"write features={list(expected) if len(expected) > 1 else expected[0]} in {name}(...)"
                 if option == "features" else
                 f"declare the input as f32{format_shape(dims)}" + (", or drop flatten=true" if dims == (784,)
                                                                  else ", or add flatten=true")))


def check_labels(name: str, labels: Labels, program, call: ast.Call, params: list) -> None:
    """The source's label format against the target's declaration, as binding would judge it."""
    target = program.target
    declared, want = target.value.name, target.classes
    problem = _label_problem(labels, target.format, want, tuple(target.value.shape[1:]))
    if problem is None:
        return
    message, hint, option = problem
    raise blame(arg_pos(call, params, option) if option else call.pos,
                f"{name} gives {_describe(labels)}, but the target '{declared}' is declared {message}", hint)


def _describe(labels: Labels) -> str:
    count = f" of {labels.classes} classes" if labels.classes else ""
    return {"sparse": f"integer class labels{count}", "onehot": f"one-hot rows{count}",
            "targets": "real-valued targets of shape (1,)", "binary": "0/1 targets of shape (1,)"}[labels.format]


def _label_problem(labels: Labels, fmt: str, want: int | None, shape: tuple) -> tuple | None:
    """(what the target is declared, a fix, the option to blame) when binding would refuse; else None."""
    have = labels.classes
    if fmt == "sparse":
        what = f"as integer class labels (int[] classes {want})"
        if labels.format == "onehot":
            return what, "drop onehot=true from the data source", "onehot"
        if labels.format == "targets":
            return what, "use a classification source, or declare a real-valued target", None
        if labels.format == "binary" and want is not None and want < 2:
            return what, "declare at least 2 classes", None
        if labels.format == "sparse" and have is not None and want is not None and have > want:
            return what, f"declare 'classes {have}' on the target, or ask the source for {want} classes", None
        return None
    if fmt == "onehot":
        what = f"one-hot (f32[{want}] onehot)"
        if labels.format == "sparse":
            return what, "add onehot=true to the data source", None
        if labels.format in ("targets", "binary"):
            return what, "use a classification source, or declare the target as it comes", None
        if have is not None and have != want:
            return what, f"declare the target f32[{have}] onehot, or ask the source for {want} classes", None
        return None
    # a real-valued target of `shape`
    what = f"f32{format_shape(shape)}"
    if labels.format == "onehot":
        return (None if have is None or shape == (have,) else
                (what, f"declare the target f32[{have}], or drop onehot=true", "onehot"))
    return None if shape == (1,) else (what, "declare the target f32[1], or use a source of that shape", None)

