"""What a person sees while a model trains, and the history written afterwards.

One Keras-style line per epoch on stdout; a live tqdm bar within the epoch on
stderr, only when stderr is a terminal (a bar in a log file is noise); nothing
at all when quiet. The history is JSON with Keras's metric names, written
atomically so a reader never sees half a file.
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO


@dataclass
class History:
    """Per-epoch results. `history` is Keras's dict of lists; `epochs` one dict per epoch;
    `diverged` says where training stopped being finite, when it did (see fitting.Divergence)."""
    epochs: list[dict[str, float]] = field(default_factory=list)
    diverged: Any = None

    @property
    def epoch(self) -> list[int]:
        """Keras's `history.epoch`: the 0-based index of each epoch run."""
        return [record["epoch"] - 1 for record in self.epochs]

    @property
    def history(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for record in self.epochs:
            for key, value in record.items():
                if key != "epoch":
                    out.setdefault(key, []).append(value)
        return out

    @property
    def last(self) -> dict[str, float]:
        return self.epochs[-1] if self.epochs else {}

    def split(self, prefix: str) -> dict[str, float] | None:
        """The last epoch's training (prefix "") or validation ("val_") results, by metric name."""
        last = self.last
        if prefix:
            out = {k[len(prefix):]: v for k, v in last.items() if k.startswith(prefix)}
        else:
            out = {k: v for k, v in last.items() if k not in ("epoch", "seconds") and not k.startswith("val_")}
        return out or None

    def to_dict(self, **extra: Any) -> dict[str, Any]:
        return {"epochs": [dict(r) for r in self.epochs], **extra}

    def __repr__(self) -> str:
        return f"History({len(self.epochs)} epochs, keys={list(self.history)})"


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float as None (JSON has no NaN), containers walked."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def csv_text(rows: list[dict[str, Any]], keys: list[str], separator: str = ",", header: bool = True) -> str:
    """Rows in Keras's CSVLogger layout: `epoch` (0-based, as the rows hold it), then `keys`; a
    value a row lacks is "NA", as Keras writes it for a run that stopped before validating."""
    import csv
    import io
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["epoch"] + keys, delimiter=separator, lineterminator="\n",
                            restval="NA", extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_history(path: str | os.PathLike, history: History, **extra: Any) -> None:
    """The history, written atomically: as JSON, {"epochs": [{"epoch": 1, "loss": ...}, ...], **extra}
    (a value that is not finite is written as null, so the file is always valid JSON), or, for
    a `.csv` path, as Keras's CSVLogger writes it (the 0-based epoch, then the logs sorted by name;
    the seconds an epoch took are only in the JSON)."""
    from modelc.files import atomic_write
    if str(path).lower().endswith(".csv"):
        keys = sorted({k for record in history.epochs for k in record} - {"epoch", "seconds"})
        text = csv_text([{**r, "epoch": r["epoch"] - 1} for r in history.epochs], keys)
    else:
        text = json.dumps(json_safe(history.to_dict(**extra)), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def format_value(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) and abs(value) >= 1e-4 or value == 0 else f"{value:.4g}"


def format_epoch(epoch: int, epochs: int, batches: int, seconds: float, logs: dict[str, float],
                 samples_per_second: float | None) -> str:
    """`Epoch 3/10  1875/1875  0.21s  loss: 0.0912  accuracy: 0.9731  285,714 samples/s`."""
    width = len(str(epochs))
    parts = [f"Epoch {epoch:>{width}}/{epochs}", f"{batches}/{batches}", f"{seconds:.2f}s"]
    parts += [f"{k}: {format_value(v)}" for k, v in logs.items() if k not in ("epoch", "seconds")]
    if samples_per_second is not None and math.isfinite(samples_per_second):
        parts.append(f"{samples_per_second:,.0f} samples/s")
    return "  ".join(parts)


class Progress:
    """Progress for one `fit`: verbose 0 = nothing, 1 = lines and a live bar on a terminal, 2 = lines."""

    def __init__(self, epochs: int, batches: int, verbose: int = 1, out: TextIO | None = None,
                 err: TextIO | None = None):
        self.epochs, self.batches, self.verbose = epochs, batches, verbose
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.bar = None
        isatty = getattr(self.err, "isatty", None)
        self.live = verbose == 1 and bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"

    def compiled(self, seconds: float) -> None:
        """The compile step, before the first epoch: `compiled in 0.84s`."""
        if self.verbose:
            print(f"compiled in {seconds:.2f}s", file=self.out, flush=True)

    def start_epoch(self, epoch: int) -> None:
        if not self.live:
            return
        from tqdm import tqdm
        self.bar = tqdm(total=self.batches, desc=f"Epoch {epoch}/{self.epochs}", unit="batch",
                        file=self.err, leave=False, dynamic_ncols=True, mininterval=0.1)

    def advance(self, batches: int, logs: dict[str, float] | None = None) -> None:
        if self.bar is not None:
            if logs:
                self.bar.set_postfix({k: format_value(v) for k, v in logs.items()}, refresh=False)
            self.bar.update(batches)

    def end_epoch(self, epoch: int, seconds: float, logs: dict[str, float],
                  samples_per_second: float | None) -> None:
        self.close()
        if self.verbose:
            print(format_epoch(epoch, self.epochs, self.batches, seconds, logs, samples_per_second),
                  file=self.out, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
