"""Training curves: the loss and every metric per epoch, training against validation, from
the history a run writes (`modelc train --history`, as JSON or CSV) or from `Model.fit`'s
records. What Keras users draw by hand from `history.history`, drawn with matplotlib
(an optional extra, imported only when a picture is drawn).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, NamedTuple

from modelc.errors import ModelcError
from modelc.files import atomic_write, file_problem
from modelc.runtime.progress import format_value

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
NOT_DRAWN = ("epoch", "seconds")
LEARNING_RATE = "learning_rate"      # drawn last, on a log scale, when a run logs it
PANEL_INCHES = (4.0, 3.2)            # one panel; two panels a row: 800 px wide at DPI
SINGLE_INCHES = (6.0, 3.6)           # a figure of one panel
TITLE_INCHES = 0.4
DPI = 100
LOG_RANGE = 1e3                      # a positive curve spanning this factor or more gets a log scale
_ACCEPTED = ("the JSON `modelc train --history H.json` writes ({\"epochs\": [...]}), Keras's "
             "history.history saved as JSON, or a CSV with an `epoch` column (Keras's CSVLogger)")


class Recorded(NamedTuple):
    """A history read from a file: the rows (1-based `epoch`, then each logged value, NaN when
    missing or not finite), a title (the model and its target) and the test results, if any."""
    rows: list[dict[str, float]]
    title: str | None
    test: dict[str, float] | None


def require_matplotlib() -> None:
    """Raise a ModelcError saying how to install matplotlib when it is missing (asked before
    a long training run, so the run does not end without its picture)."""
    _matplotlib()


def _matplotlib():
    from modelc.extras import require
    require("plot", "drawing training curves")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    return Figure, FigureCanvasAgg, MaxNLocator


def curve_title(model: str | None, target: str | None = None) -> str | None:
    """The curves' title: the model's name, and the target it trained on: `blobs (numpy)`."""
    if not model:
        return None
    return f"{model} ({target})" if target else model


def _number(value: Any, where: str, path) -> float:
    """A logged value as a float: None, "", "NA" and anything not finite are NaN."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "NA")):
        return math.nan
    if isinstance(value, bool):
        value = "true" if value else "false"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ModelcError(f"cannot read '{path}': {where} is {value!r}, not a number", hint=f"give {_ACCEPTED}") from None
    return number if math.isfinite(number) else math.nan


def _epoch(value: Any, where: str, path) -> int:
    number = _number(value, where, path)
    if not number.is_integer():
        raise ModelcError(f"cannot read '{path}': {where} is {value!r}, not a whole epoch number",
                          hint=f"give {_ACCEPTED}")
    return int(number)


def _row(record: dict, epoch: int, where: str, path) -> dict[str, float]:
    row: dict[str, float] = {"epoch": epoch}
    for key, value in record.items():
        if key != "epoch":
            row[str(key)] = _number(value, f"{where} '{key}'", path)
    return row


def _from_json(text: str, path) -> Recorded:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ModelcError(f"cannot read '{path}': not valid JSON ({e})", hint=f"give {_ACCEPTED}") from None
    if isinstance(data, dict) and isinstance(data.get("epochs"), list):
        rows = []
        for i, record in enumerate(data["epochs"]):
            if not isinstance(record, dict):
                raise ModelcError(f"cannot read '{path}': epochs[{i}] is not an object", hint=f"give {_ACCEPTED}")
            epoch = _epoch(record["epoch"], f"epochs[{i}] 'epoch'", path) if "epoch" in record else i + 1
            rows.append(_row(record, epoch, f"epochs[{i}]", path))
        title = curve_title(*(data.get(k) if isinstance(data.get(k), str) else None for k in ("model", "target")))
        test = data.get("test")
        test = {str(k): _number(v, f"test '{k}'", path) for k, v in test.items()} if isinstance(test, dict) else None
        return Recorded(rows, title, test)
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) > 1:
            raise ModelcError(f"cannot read '{path}': its lists have different lengths ({sorted(lengths)})",
                              hint="Keras's history.history has one value per epoch for every name")
        columns = {k: v for k, v in data.items() if k != "epoch"}
        count = lengths.pop()
        rows = [_row({k: v[i] for k, v in columns.items()}, i + 1, f"epoch {i + 1}", path) for i in range(count)]
        return Recorded(rows, None, None)
    raise ModelcError(f"cannot read '{path}': it holds no per-epoch history", hint=f"give {_ACCEPTED}")


def _from_csv(text: str, path) -> Recorded:
    """Keras's CSVLogger layout: `epoch` (0-based), then the logged names; any one-character
    separator, the one after `epoch` in the header."""
    header = text.split("\n", 1)[0].lstrip("\ufeff").rstrip("\r")
    if not header.startswith("epoch") or len(header) < len("epoch") + 2:
        raise ModelcError(f"cannot read '{path}': its first line is {header[:80]!r}, not a header `epoch,...`",
                          hint=f"give {_ACCEPTED}")
    separator = header[len("epoch")]
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=separator)
    names = next(reader)
    rows = []
    for line, cells in enumerate(reader, start=2):
        if not cells:
            continue
        if len(cells) != len(names):
            raise ModelcError(f"cannot read '{path}': line {line} has {len(cells)} values, the header {len(names)}",
                              hint=f"give {_ACCEPTED}")
        record = dict(zip(names, cells))
        rows.append(_row(record, _epoch(record["epoch"], f"line {line} 'epoch'", path) + 1, f"line {line}", path))
    return Recorded(rows, None, None)


def read_history(path) -> Recorded:
    """The history in a .json or .csv file (see Recorded); anything unreadable is a ModelcError."""
    readers = {".json": _from_json, ".csv": _from_csv}
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in readers:
        raise ModelcError(f"cannot read a history from '{path}': unknown extension '{ext or '(none)'}'",
                          hint="a history is a .json or a .csv file (modelc train --history H.json)")
    problem = file_problem(path)
    if problem:
        raise ModelcError(f"cannot read the history '{path}': {problem}",
                          hint="write one with modelc train SPEC --history H.json")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelcError(f"cannot read the history '{path}': {getattr(e, 'strerror', None) or e}",
                          hint=f"give {_ACCEPTED}") from None
    recorded = readers[ext](text, path)
    if not recorded.rows:
        raise ModelcError(f"the history '{path}' holds no epochs", hint="it is written after each epoch of a run")
    return recorded


def panels(rows: list[dict[str, float]]) -> list[str]:
    """What gets a panel: loss first, then every other logged name in the order first logged
    (validation folded into its training name), the learning rate last."""
    seen = dict.fromkeys(k[len("val_"):] if k.startswith("val_") else k
                         for row in rows for k in row if k not in NOT_DRAWN)
    names = sorted((n for n in seen if n != LEARNING_RATE), key=lambda n: n != "loss")
    return names + ([LEARNING_RATE] if LEARNING_RATE in seen else [])


def _series(rows, name: str) -> list[float]:
    out = []
    for row in rows:
        value = row.get(name)
        out.append(float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan)
    return out


def check_format(path) -> str:
    """The picture's extension, when it is one the curves can be drawn as."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in FORMATS:
        raise ModelcError(f"cannot draw curves as '{path}': unknown extension '{ext or '(none)'}'",
                          hint="use one of " + ", ".join(FORMATS))
    return ext


def draw(rows: list[dict[str, float]], path, title: str | None = None,
         test: dict[str, float] | None = None) -> None:
    """Draw the curves of `rows` (1-based `epoch` and the logged values, as `Model.fit`'s
    records or `read_history`'s rows) to `path`, a .png, .svg or .pdf: a panel per name,
    training solid with markers, validation dashed, a test result dotted; a missing or
    non-finite value is a gap."""
    ext = check_format(path)
    names = panels(rows)
    if not names:
        raise ModelcError(f"nothing to draw in '{path}': the history holds no epochs with values",
                          hint="train for at least one epoch")
    Figure, FigureCanvasAgg, MaxNLocator = _matplotlib()
    columns = 1 if len(names) == 1 else 2
    lines = math.ceil(len(names) / columns)
    width, height = SINGLE_INCHES if columns == 1 else (PANEL_INCHES[0] * columns, PANEL_INCHES[1] * lines)
    fig = Figure(figsize=(width, height + (TITLE_INCHES if title else 0)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(rows)]
    pad = max(0.5, 0.03 * (max(epochs) - min(epochs)))      # every panel the same epochs, one alone centred
    axes = fig.subplots(lines, columns, squeeze=False).flat
    for ax, name in zip(axes, names):
        _panel(ax, name, epochs, rows, (test or {}).get(name))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(min(epochs) - pad, max(epochs) + pad)
    for ax in axes:          # the empty cell of an odd count
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=13, fontweight="bold")
    metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[FORMATS[ext]]
    atomic_write(path, lambda f: fig.savefig(f, format=FORMATS[ext], dpi=DPI, metadata=metadata))


def _panel(ax, name: str, epochs: list[int], rows, test: float | None) -> None:
    train, val = _series(rows, name), _series(rows, "val_" + name)
    drawn = [v for v in train + val + ([test] if test is not None else []) if math.isfinite(v)]
    if any(math.isfinite(v) for v in train):
        ax.plot(epochs, train, "-o", color="C0", markersize=4, linewidth=1.6, label="training")
    if any(math.isfinite(v) for v in val):
        ax.plot(epochs, val, "--o", color="C1", markersize=3, linewidth=1.6, label="validation")
    if test is not None and math.isfinite(test):
        ax.axhline(test, linestyle=":", color="C2", linewidth=1.8, label=f"test {format_value(test)}")
    if not drawn:
        ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center", color="0.4")
    elif min(drawn) > 0 and (name == LEARNING_RATE or max(drawn) / min(drawn) >= LOG_RANGE):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(name)
    ax.grid(True, alpha=0.3)
    if drawn and name != LEARNING_RATE:
        ax.legend(fontsize=8)
