"""Data the user brings: a folder of IDX files, a NumPy .npz, a numeric CSV.

Paths are relative to the spec's folder. Every problem is a ModelcError that
names the file and, where there is one, the key, row or column at fault.
"""
from __future__ import annotations

import csv
import io
import re
import warnings
from pathlib import Path

import numpy as np

from modelc.errors import ModelcError
from modelc.files import file_problem
from modelc.runtime import npyfile
from .core import (Dataset, LoadContext, Splits, check_finite, finish_labels, infer_classes,
                   labels_or_targets, scaled)
from .idx import read_idx

# `train-images-idx3-ubyte.gz`, `t10k-labels.idx1-ubyte`: prefix, kind, then the IDX suffix.
_IDX_NAME = re.compile(r"^(?P<split>.+?)[-.](?P<kind>images|labels)[-.]idx(?P<ndim>\d+)[-.]ubyte(?P<gz>\.gz)?$")
_TRAIN_PREFIXES = ("train",)
_TEST_PREFIXES = ("t10k", "test")


def _existing(ctx: LoadContext, arg: str, path: str, want_dir: bool = False) -> Path:
    """The resolved path of a file (or folder) option, or a located error saying what it is instead."""
    p = ctx.resolve(path)
    looked = f" (looked at {p})" if str(p) != path else ""
    if want_dir:
        if p.is_dir():
            return p
        problem = "not found" if not p.exists() else "is not a folder"
        raise ctx.fail(arg, f"folder '{path}' {problem}{looked}",
                       "relative paths are relative to the spec file's folder" if problem == "not found"
                       else "name the folder that holds the IDX files")
    problem = file_problem(p)
    if problem == "not found":
        raise ctx.fail(arg, f"file '{path}' not found{looked}", "relative paths are relative to the spec file's folder")
    if problem is not None:
        raise ctx.fail(arg, f"file '{path}' {problem}{looked}", "name a regular file on disk")
    return p


# ---------------------------------------------------------------- idx folder

def load_idx_folder(opts: dict, ctx: LoadContext) -> Splits:
    folder = _existing(ctx, "path", opts["path"], want_dir=True)
    found: dict[tuple[str, str], Path] = {}
    for p in sorted(folder.iterdir()):
        m = _IDX_NAME.match(p.name)
        if m and p.is_file():
            key = (m["split"], m["kind"])
            if key not in found or p.name.endswith(".gz"):     # prefer the canonical .gz when both exist
                found[key] = p
    def pick(prefixes: tuple[str, ...]) -> tuple[Path, Path] | None:
        for prefix in prefixes:
            images, labels = found.get((prefix, "images")), found.get((prefix, "labels"))
            if images and labels:
                return images, labels
            if images or labels:
                have, lack = ("images", "labels") if images else ("labels", "images")
                raise ModelcError(f"{folder}: found {prefix} {have} ({(images or labels).name}) "
                                  f"but no {prefix} {lack} file",
                                  f"expected a pair like {prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz")
        return None

    train = pick(_TRAIN_PREFIXES)
    if train is None:
        names = ", ".join(sorted(p.name for p in folder.iterdir())[:12]) or "nothing"
        raise ModelcError(f"{folder}: no training IDX files (it holds: {names})",
                          "expected train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] "
                          "(and optionally t10k-* or test-* for the test split)")
    test = pick(_TEST_PREFIXES)

    def read(pair: tuple[Path, Path], name: str) -> tuple[np.ndarray, np.ndarray]:
        images, labels = read_idx(pair[0]), read_idx(pair[1])
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ModelcError(f"{pair[1]}: labels must be a 1-D integer IDX file, got {labels.dtype} {labels.shape}")
        if len(images) != len(labels):
            raise ModelcError(f"{folder}: {pair[0].name} holds {len(images)} samples "
                              f"but {pair[1].name} holds {len(labels)} labels")
        return images, labels.astype(np.int64)

    parts = {"train": read(train, "train")}
    if test is not None:
        parts["test"] = read(test, "test")
    classes = infer_classes(*(y for _, y in parts.values())) if opts["onehot"] else 0
    data = {}
    for name, (images, labels) in parts.items():
        x = scaled(images, opts["scale"])
        if opts["flatten"]:
            x = x.reshape(len(x), -1)
        y = finish_labels(labels, onehot=opts["onehot"], classes=classes, where=f"{folder} {name} labels")
        data[name] = Dataset(x, y, f"idx.{name}")
    return Splits(data["train"], data.get("test"))


# ---------------------------------------------------------------- npz

def load_npz(opts: dict, ctx: LoadContext) -> Splits:
    path = _existing(ctx, "path", opts["path"])
    with npyfile.Archive(path, str(path), hint="save the arrays with np.savez(path, x=..., y=...)") as archive:
        keys = sorted(archive.members)

        def get(option: str) -> np.ndarray:
            key = opts[option]
            if key not in archive.members:
                hint = None
                if "x_train" in keys and option == "x":
                    hint = (f'this looks like a train/test archive: write npz("{opts["path"]}", x="x_train", '
                            f'y="y_train", x_test="x_test", y_test="y_test")')
                raise ctx.fail(option if option in _explicit(ctx) else None,
                               f"{path.name} has no array '{key}' ({option}); it holds: {', '.join(keys) or 'nothing'}",
                               hint or f"name the arrays with {option}=\"...\"")
            return archive.read(key)

        splits = [("train", get("x"), get("y"))]
        if opts["x_test"] is not None:
            splits.append(("test", get("x_test"), get("y_test")))
    return _finish(splits, opts, path.name)


def _explicit(ctx: LoadContext) -> set[str]:
    names = {a.key.name for a in ctx.call.keywords}
    return names | {p.name for p, _ in zip(ctx.params, ctx.call.positional)}


def _finish(splits: list[tuple[str, np.ndarray, np.ndarray]], opts: dict, source: str,
            unit: str = "index", first: int = 0) -> Splits:
    """Shared by npz and csv: check, scale, and shape the labels (positions counted as `unit` from `first`)."""
    checked = []
    for name, x, y in splits:
        where = f"{source} ({name})"
        if x.ndim == 0 or y.ndim == 0:
            raise ModelcError(f"{where}: features and labels must be arrays with a sample axis")
        if len(x) != len(y):
            raise ModelcError(f"{where}: {len(x)} feature rows but {len(y)} labels")
        if x.dtype.kind not in "biuf":
            raise ModelcError(f"{where}: features must be numbers, not {x.dtype}")
        check_finite(x, f"{where} features")
        checked.append((name, x, labels_or_targets(y, f"{where} labels")))
    classes = opts["classes"]
    if opts["onehot"] and not classes:
        classes = infer_classes(*(y for _, _, y in checked))
    data = {name: Dataset(scaled(x, opts["scale"]),
                          finish_labels(y, onehot=opts["onehot"], classes=classes, where=f"{source} ({name}) labels",
                                        unit=unit, first=first),
                          name=f"{source}.{name}")
            for name, x, y in checked}
    return Splits(data["train"], data.get("test"))


# ---------------------------------------------------------------- csv

def _parse_csv_slow(path: Path, delimiter: str, header: bool) -> np.ndarray:
    """Row-by-row parse, run when the fast path fails, to say which row and column is wrong."""
    rows: list[list[float]] = []
    width = None
    with npyfile.open_regular(path, str(path)) as raw, \
            io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        for row in reader:
            line = reader.line_num
            if header and line == 1:
                continue
            if not row or all(not c.strip() for c in row):
                continue
            if width is None:
                width = len(row)
            elif len(row) != width:
                raise ModelcError(f"{path}: row {line} has {len(row)} columns, but earlier rows have {width}")
            values = []
            for column, cell in enumerate(row, 1):
                try:
                    value = float(cell)
                except ValueError:
                    raise ModelcError(f"{path}: row {line}, column {column}: '{cell.strip()[:40]}' is not a number",
                                      "use header=true if the first row holds column names" if line == 1 else None) from None
                if not np.isfinite(value):
                    raise ModelcError(f"{path}: row {line}, column {column}: '{cell.strip()}' is not a finite number")
                values.append(value)
            rows.append(values)
    if not rows:
        raise ModelcError(f"{path}: no data rows")
    return np.array(rows, dtype=np.float64)


def _read_csv(path: Path, delimiter: str, header: bool) -> np.ndarray:
    try:
        with npyfile.open_regular(path, str(path)) as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)     # "input contained no data": reported below
            table = np.loadtxt(f, delimiter=delimiter, skiprows=1 if header else 0, dtype=np.float64,
                               ndmin=2, comments=None, encoding="utf-8-sig")
        if table.size == 0:
            raise ValueError("empty")
    except (ValueError, UnicodeDecodeError):
        table = _parse_csv_slow(path, delimiter, header)
    except OSError as e:
        raise ModelcError(f"cannot read {path}: {e.strerror or e}") from None
    if not np.isfinite(table).all():
        table = _parse_csv_slow(path, delimiter, header)     # raises, naming the row
    return table


def _split_label(table: np.ndarray, label: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    width = table.shape[1]
    if not -width <= label < width or width < 2:
        raise ModelcError(f"{path}: label column {label} does not exist; the file has {width} columns",
                          "label counts from 0, negative from the end (-1 is the last column)")
    index = label % width
    return np.ascontiguousarray(np.delete(table, index, axis=1)), table[:, index]


def load_csv(opts: dict, ctx: LoadContext) -> Splits:
    splits = []
    for name, arg in (("train", "path"), ("test", "test")):
        if opts[arg] is None:
            continue
        path = _existing(ctx, arg, opts[arg])
        x, y = _split_label(_read_csv(path, opts["delimiter"], opts["header"]), opts["label"], path)
        if splits and x.shape[1] != splits[0][1].shape[1]:
            raise ModelcError(f"{path}: {x.shape[1]} feature columns, but the training file has {splits[0][1].shape[1]}")
        splits.append((name, x, y))
    # Whole-number label columns are class indices (int64); any fraction makes them targets, float32
    # (n, 1). Whole numbers beyond 2**53 are not exact in float64 and would wrap in int64: they stay
    # float64, so a class-label check reports them as they were written.
    integral = all(np.array_equal(y, np.round(y)) for _, _, y in splits)
    exact = integral and all(np.all(np.abs(y) <= 2.0 ** 53) for _, _, y in splits)
    if opts["onehot"] or opts["classes"]:
        splits = [(name, x, y.astype(np.int64) if exact else y) for name, x, y in splits]
    else:
        splits = [(name, x, y.astype(np.int64) if exact else y.astype(np.float32)[:, None])
                  for name, x, y in splits]
    return _finish(splits, opts, Path(opts["path"]).name, unit="data row", first=1)
