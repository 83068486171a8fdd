"""Data sources: `data mnist(scale=1/255)` in a spec becomes arrays the runtime can train on.

Two steps, so that spec mistakes surface before any file is touched:
`bind_source(call)` checks the source name and its options against the
registry (a located SpecError on a typo), and `load(bound)` reads or makes
the data and returns `Splits(train, test)`. `check_static(bound, program)`
compares what the options alone tell (feature shape, label format, classes)
with the spec's input and target, reading nothing (see statics.py).

    from modelc.runtime.data import load, source_call
    splits = load(source_call("mnist", scale=1 / 255, flatten=True))
    splits.train.x.shape    # (60000, 784), float32

Sources: mnist, idx, npz, csv, and the generators blobs, random,
regression, binary. See each loader's module for the details.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from modelc.errors import ModelcError, SpecError, unknown
from modelc.grammar import ast
from modelc.schema import Param, bind_call

from . import statics
from .core import Dataset, LoadContext, Splits, arg_pos, blame, one_hot, scaled
from .files import load_csv, load_idx_folder, load_npz
from .hub import restricted_load
from .mnist import MNIST_FILES, cache_dir, read_mnist, load_mnist
from .synthetic import load_binary, load_blobs, load_random, load_regression, test_size

__all__ = ["Dataset", "Splits", "Source", "BoundSource", "DATA_SOURCES", "bind_source", "load", "check_static",
           "source_call", "one_hot", "read_mnist", "cache_dir", "MNIST_FILES",
           "restricted_load", "scaled"]


@dataclass(frozen=True)
class Source:
    """A data source the spec can name: its options, its loader, one line of help, and what
    its options alone say about the data (None where only reading the files tells)."""
    params: list[Param]
    load: Callable[[dict, LoadContext], Splits]
    doc: str
    features: Callable[[dict], tuple] | None = None          # the shape of one sample's features
    labels: Callable[[dict], statics.Labels] | None = None   # the labels' format and classes


@dataclass
class BoundSource:
    """A source call whose name and options have been checked; nothing read yet."""
    name: str
    options: dict[str, Any]
    call: ast.Call
    source: Source

    def __str__(self) -> str:
        """The call as the spec wrote it (numbers keep their text, e.g. scale=1/255)."""
        defaults = {p.name: p.default for p in self.source.params}
        written = {a.key.name: a.value.text for a in (self.call.keywords if self.call else ())
                   if isinstance(a.value, ast.Number)}

        def show(key, value):
            if key in written:
                return f"{key}={written[key]}"
            if isinstance(value, str):
                return f"{key}={value!r}"
            if isinstance(value, tuple):      # a shape: features=[8, 8, 1]
                return f"{key}={list(value)[0] if len(value) == 1 else list(value)}"
            return f"{key}={str(value).lower() if isinstance(value, bool) else f'{value:g}'}"

        shown = [show(k, v) for k, v in self.options.items() if v is not None and v != defaults.get(k)]
        return f"{self.name}({', '.join(shown)})"


def _common(*, flatten: bool = False) -> list[Param]:
    out = [Param("scale", "float", 1.0, doc="features are multiplied by this (1/255 for pixels)")]
    if flatten:
        out.append(Param("flatten", "bool", False, doc="one vector per sample instead of an image"))
    out.append(Param("onehot", "bool", False, doc="labels as float32 one-hot rows instead of indices"))
    return out


def _features(default: int) -> Param:
    return Param("features", "dims", (default,), doc="features per sample: a number, or a shape like [8, 8, 1]")


_SEED = Param("seed", "int", 0, low=0, doc="the random generator's seed")
_TEST = Param("test", "float", 0.2, low=0, high=1, doc="fraction held out as the test split")
_ONEHOT = Param("onehot", "bool", False, doc="labels as float32 one-hot rows instead of indices")

DATA_SOURCES: dict[str, Source] = {
    "mnist": Source(
        _common(flatten=True) + [Param("limit", "int", 0, low=0, doc="keep the first N samples of each split (0: all)")],
        load_mnist,
        "the MNIST digits (60,000 train, 10,000 test, 28x28): from --data DIR, the cache, or downloaded",
        features=lambda o: (784,) if o["flatten"] else (28, 28), labels=lambda o: statics.classes(o, 10)),
    "idx": Source(
        [Param("path", "str", doc="a folder of IDX files")] + _common(flatten=True),
        load_idx_folder,
        "a folder of IDX files: train-images/labels (and t10k- or test- for the test split)",
        labels=lambda o: statics.classes(o, None)),
    "npz": Source(
        [Param("path", "str", doc="an .npz file"),
         Param("x", "str", "x"), Param("y", "str", "y"),
         Param("x_test", "str", None), Param("y_test", "str", None)]
        + _common() + [Param("classes", "int", 0, low=0, doc="number of classes (0: from the labels)")],
        load_npz,
        "arrays from a NumPy .npz file (never unpickled)"),
    "csv": Source(
        [Param("path", "str", doc="a CSV file of numbers"),
         Param("label", "int", -1, doc="the label column, negative from the end"),
         Param("header", "bool", False, doc="skip a first row of column names"),
         Param("test", "str", None, doc="a second CSV file for the test split"),
         Param("scale", "float", 1.0),
         Param("delimiter", "str", ","),
         _ONEHOT,
         Param("classes", "int", 0, low=0, doc="number of classes (0: from the labels)")],
        load_csv,
        "a numeric CSV file, one sample per row, one label column"),
    "blobs": Source(
        [Param("samples", "int", 1500, low=1), Param("centers", "int", 3, low=1),
         _features(2), Param("std", "float", 1.0, low=0), _SEED, _TEST, _ONEHOT],
        load_blobs,
        "Gaussian blobs (like scikit-learn's make_blobs); label = blob",
        features=lambda o: o["features"], labels=lambda o: statics.classes(o, o["centers"])),
    "random": Source(
        [Param("samples", "int", 1000, low=1), _features(10),
         Param("classes", "int", 3, low=2), _SEED, _TEST, _ONEHOT],
        load_random,
        "random features, labels from a random linear teacher plus noise",
        features=lambda o: o["features"], labels=lambda o: statics.classes(o, o["classes"])),
    "regression": Source(
        [Param("samples", "int", 1000, low=1), _features(4), _SEED, _TEST,
         Param("noise", "float", 0.1, low=0)],
        load_regression,
        "y = sin + linear function of x, plus noise; float32 targets (n, 1)",
        features=lambda o: o["features"], labels=lambda o: statics.Labels("targets")),
    "binary": Source(
        [Param("samples", "int", 1000, low=1), _features(3), _SEED, _TEST],
        load_binary,
        "two classes, float32 (n, 1) in {0, 1}: inside or outside a ball",
        features=lambda o: o["features"], labels=lambda o: statics.Labels("binary")),
}


def _extra_checks(name: str, options: dict, call: ast.Call, params: list[Param]) -> None:
    """Rules that involve more than one option, or the value of a string."""
    def fail(arg: str, message: str, hint: str | None = None) -> ModelcError:
        return blame(arg_pos(call, params, arg), f"{name}: {message}", hint)

    if "path" in options and not options["path"].strip():
        raise fail("path", "'path' is empty")
    if name == "npz":
        for a, b in (("x_test", "y_test"), ("y_test", "x_test")):
            if options[a] is not None and options[b] is None:
                raise fail(a, f"'{a}' needs '{b}' too", f'name both, e.g. x_test="x_test", y_test="y_test"')
        for key in ("x", "y", "x_test", "y_test"):
            if options[key] is not None and not options[key]:
                raise fail(key, f"'{key}' is empty")
    if name == "csv":
        delimiter = options["delimiter"]
        if len(delimiter) != 1 or delimiter in _NOT_DELIMITERS or delimiter.isdigit():
            raise fail("delimiter", f"'delimiter' {delimiter!r} cannot separate numbers: it must be one "
                       "character that is not a digit, sign, point, quote or line break",
                       'use "," or ";" or "\\t"')
    if "samples" in options and "test" in options:
        n_test = test_size(options["samples"], options["test"])
        if options["samples"] - n_test < 1:
            raise fail("test", f"test={options['test']:g} leaves no training samples out of {options['samples']}")


_NOT_DELIMITERS = set('\n\r"\'.+-eE') | {"\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"}


def bind_source(call: ast.Call) -> BoundSource:
    """Check a `data` call's name and options; raises a located SpecError; reads no data."""
    name = call.name.name
    if name not in DATA_SOURCES:
        e = unknown("data source", name, DATA_SOURCES, call.name.pos)
        raise blame(e.pos, e.message, e.hint)
    source = DATA_SOURCES[name]
    try:
        options = bind_call(call, source.params, what=name)
    except SpecError as e:
        raise blame(e.pos, e.message, e.hint) from None     # a call built in Python has no line
    _extra_checks(name, options, call, source.params)
    return BoundSource(name, options, call, source)


def _literal(value: Any) -> ast.Literal:
    if isinstance(value, bool):
        return ast.Bool(value)
    if isinstance(value, (int, float)):
        return ast.Number(value, repr(value))
    if isinstance(value, str):
        return ast.String(value)
    raise TypeError(f"a data source option cannot be {type(value).__name__}")


def source_call(name: str, **options: Any) -> ast.Call:
    """Build the AST of `name(key=value, ...)` from Python values: the spec syntax for Python users."""
    args = [ast.Arg(ast.Ident(k), _literal(v)) for k, v in options.items() if v is not None]
    return ast.Call(ast.Ident(name), args)


def _bound(call_or_bound: ast.Call | BoundSource | str) -> BoundSource:
    if isinstance(call_or_bound, str):
        call_or_bound = ast.Call(ast.Ident(call_or_bound))
    return call_or_bound if isinstance(call_or_bound, BoundSource) else bind_source(call_or_bound)


def check_static(bound: ast.Call | BoundSource | str, program) -> None:
    """What the source's options alone say about its data, checked against the spec's input and
    target: a located SpecError (at the data call or the option) on a disagreement, reading nothing.
    Sources whose shapes and label format only their files tell (csv, npz) pass unchecked."""
    bound = _bound(bound)
    source, opts, call = bound.source, bound.options, bound.call
    if source.features is not None:
        statics.check_features(bound.name, source.features(opts), program, call, source.params)
    if source.labels is not None and program.target is not None:
        statics.check_labels(bound.name, source.labels(opts), program, call, source.params)


def load(call_or_bound: ast.Call | BoundSource | str, *, data_dir: str | None = None,
         base_dir: str | None = None, quiet: bool = False, program=None) -> Splits:
    """Read or generate the data a source names.

    `base_dir` is the spec file's folder (relative paths resolve against it);
    `data_dir` is the user's `--data DIR`, defaulting to MODELC_DATA. With the
    compiled `program`, a source whose feature shape its options tell (the
    generators, mnist) is checked against the declared input before anything
    is read or generated.
    """
    bound = _bound(call_or_bound)
    if program is not None and bound.source.features is not None:
        statics.check_features(bound.name, bound.source.features(bound.options), program, bound.call,
                               bound.source.params)
    ctx = LoadContext(call=bound.call, params=bound.source.params, data_dir=data_dir,
                      base_dir=base_dir, quiet=quiet, program=program)
    return bound.source.load(dict(bound.options), ctx)
