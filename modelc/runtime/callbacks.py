"""Keras's callbacks, with Keras 3's semantics, for `Model.fit` and the spec's `train` section.

A callback sees the model (`self.model`), the fit's `params` (verbose, epochs,
steps) and four hooks: `on_train_begin/end(logs)` and `on_epoch_begin/end(epoch,
logs)`, with 0-based epochs and Keras's `logs` (loss, metrics, val_*). A
compiled epoch is one native call, so Keras's batch-level hooks cannot run: a
callback that overrides one is refused when `fit` starts, rather than ignored.

`get_state`/`set_state` carry a callback's progress (its best value, its wait)
through a checkpoint, so a resumed run stops, reduces and saves exactly where
the unbroken run would have. The spec's `callbacks [...]` line builds these same
classes from their signatures: the defaults below are the only ones.
"""
from __future__ import annotations

import inspect
import math
import os
import sys
from typing import Any

import numpy as np

from modelc.errors import ModelcError
from modelc.runtime.progress import csv_text

BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end",
               "on_test_batch_begin", "on_test_batch_end", "on_predict_batch_begin", "on_predict_batch_end",
               "on_test_begin", "on_test_end", "on_predict_begin", "on_predict_end")


class Callback:
    """The base class: override the hooks you need."""

    def __init__(self):
        self.model = None
        self.params: dict[str, Any] = {}

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def get_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of this callback's progress (plain JSON values)."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's `get_state()`."""


def check_hooks(callbacks) -> None:
    """Refuse a callback that is not one, or that overrides a hook a compiled epoch cannot call."""
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise ModelcError(f"callbacks must be modelc.callbacks.Callback objects, not {type(callback).__name__}",
                              hint="subclass modelc.callbacks.Callback and override on_epoch_end")
        for hook in BATCH_HOOKS:
            if hasattr(callback, hook):
                raise ModelcError(
                    f"{type(callback).__name__} defines {hook}, but modelc runs a whole epoch as one compiled "
                    "call, so batch-level hooks cannot run",
                    hint="use on_epoch_begin / on_epoch_end (and on_train_begin / on_train_end)")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _finite_or_none(value):
    return None if value is None or not math.isfinite(value) else float(value)


class _Monitor(Callback):
    """A callback that watches one logged quantity and knows which way is better."""

    def __init__(self, monitor: str, mode: str):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ModelcError(f"{type(self).__name__}: mode must be 'auto', 'min' or 'max'; got {mode!r}")
        if not isinstance(monitor, str) or not monitor:
            raise ModelcError(f"{type(self).__name__}: monitor must name a logged value, like 'val_loss'")
        self.monitor = monitor
        self.mode = mode

    def _better_is_higher(self) -> bool:
        """Keras 3's rule: the loss falls; a metric goes the way its definition says."""
        if self.mode != "auto":
            return self.mode == "max"
        from modelc.compiler.catalog import METRIC_ALIASES, METRICS
        name = self.monitor[len("val_"):] if self.monitor.startswith("val_") else self.monitor
        if name == "loss" or name == "learning_rate":
            return False
        metric = METRICS.get(METRIC_ALIASES.get(name, name))
        if metric is None:
            raise ModelcError(f"{type(self).__name__} cannot tell whether '{self.monitor}' should rise or fall",
                              hint="pass mode='max' or mode='min'")
        return metric.direction == "up"

    def _beats(self, value: float, reference: float | None, margin: float = 0.0) -> bool:
        """Whether `value` is better than `reference` (None: nothing yet) by more than `margin`."""
        if reference is None:
            return True
        if self._better_is_higher():
            return value - margin > reference
        return value + margin < reference

    def _current(self, logs) -> float | None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            _say(f"modelc: {type(self).__name__} watches '{self.monitor}', which is not logged; "
                 f"available: {', '.join(sorted(logs or {}))}")
            return None
        return float(value)


class EarlyStopping(_Monitor):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode)
        self.min_delta = abs(float(min_delta))
        self.patience = int(patience)
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self.wait = self.stopped_epoch = self.best_epoch = 0
        self.best = None
        self.best_weights = None

    def on_train_begin(self, logs=None):
        self._better_is_higher()        # an unknown direction is an error now, not after an epoch
        self.wait = self.stopped_epoch = self.best_epoch = 0   # as Keras, `best` outlives a fit
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        current = self._current(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._beats(current, self.best, self.min_delta):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._beats(current, self.baseline, self.min_delta):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            _say(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                _say(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)

    def get_state(self):
        return {"wait": self.wait, "stopped_epoch": self.stopped_epoch, "best_epoch": self.best_epoch,
                "best": _finite_or_none(self.best)}

    def set_state(self, state):
        self.wait, self.stopped_epoch = int(state["wait"]), int(state["stopped_epoch"])
        self.best_epoch, self.best = int(state["best_epoch"]), state["best"]

    def get_arrays(self) -> list[np.ndarray]:
        """The best weights so far, which a checkpoint keeps beside the model's own."""
        return list(self.best_weights) if self.best_weights is not None else []

    def set_arrays(self, arrays: list[np.ndarray]) -> None:
        self.best_weights = list(arrays) if arrays else None


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by `factor` when `monitor` has stalled for `patience` epochs."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0):
        super().__init__(monitor, mode)
        if not 0 < float(factor) < 1:
            raise ModelcError(f"ReduceLROnPlateau: factor must be between 0 and 1 (it multiplies the "
                              f"learning rate); got {factor!r}")
        self.factor = float(factor)
        self.patience = int(patience)
        self.verbose = verbose
        self.min_delta = float(min_delta)
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        self.wait = self.cooldown_counter = 0
        self.best = None

    def _better_is_higher(self) -> bool:
        """Keras 3's ReduceLROnPlateau reads the name alone: higher is better when it says 'acc'."""
        return self.mode == "max" or (self.mode == "auto" and "acc" in self.monitor)

    def _improved(self, value) -> bool:
        """Keras 3 moves the best, not the value, by min_delta here (unlike EarlyStopping's `_beats`);
        the two round differently, so each keeps its own form."""
        if self.best is None:
            return True
        if self._better_is_higher():
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_train_begin(self, logs=None):
        self._better_is_higher()
        self.wait = self.cooldown_counter = 0
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizer = self.model.optimizer
        logs["learning_rate"] = optimizer.learning_rate
        current = self._current(logs)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(current):
            self.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = optimizer.learning_rate
                if old > float(np.float32(self.min_lr)):
                    new = max(old * self.factor, self.min_lr)
                    optimizer.learning_rate = new
                    if self.verbose > 0:
                        _say(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new:g}.")
                    self.cooldown_counter = self.cooldown
                    self.wait = 0

    def get_state(self):
        return {"wait": self.wait, "cooldown_counter": self.cooldown_counter, "best": _finite_or_none(self.best)}

    def set_state(self, state):
        self.wait, self.cooldown_counter = int(state["wait"]), int(state["cooldown_counter"])
        self.best = state["best"]


class ModelCheckpoint(_Monitor):
    """Save the model (a modelc .npz checkpoint) after each epoch, or only when `monitor` improves.
    `filepath` may name the epoch and logged values: "ckpt/{epoch:02d}-{val_loss:.3f}.npz"."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__(monitor, mode)
        if not str(filepath).endswith(".npz"):
            raise ModelcError(f"ModelCheckpoint writes modelc checkpoints, so its filepath must end in .npz; "
                              f"got '{filepath}'")
        if save_freq != "epoch":
            raise ModelcError("ModelCheckpoint: save_freq must be 'epoch' (a compiled epoch has no batch hooks)")
        self.filepath = os.fspath(filepath)
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)   # a checkpoint is always the weights and the optimizer
        self.best = initial_value_threshold

    def on_train_begin(self, logs=None):
        if self.save_best_only:
            self._better_is_higher()

    def _path(self, epoch, logs) -> str:
        try:
            return self.filepath.format(epoch=epoch + 1, **(logs or {}))
        except (KeyError, IndexError, ValueError) as e:
            raise ModelcError(f"ModelCheckpoint cannot fill in '{self.filepath}' ({e})",
                              hint=f"it may use {{epoch}} and the logged values: {', '.join(sorted(logs or {}))}") \
                from None

    def on_epoch_end(self, epoch, logs=None):
        path = self._path(epoch, logs)
        if not self.save_best_only:
            if self.verbose > 0:
                _say(f"Epoch {epoch + 1}: saving model to {path}")
            self.model.save(path)
            return
        current = self._current(logs)
        if current is None:
            return
        if self._beats(current, self.best):
            if self.verbose > 0:
                before = "inf" if self.best is None else f"{self.best:.5f}"
                _say(f"Epoch {epoch + 1}: {self.monitor} improved from {before} to {current:.5f}, "
                     f"saving model to {path}")
            self.best = current
            self.model.save(path)
        elif self.verbose > 0:
            _say(f"Epoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")

    def get_state(self):
        return {"best": _finite_or_none(self.best)}

    def set_state(self, state):
        self.best = state["best"]


class TerminateOnNaN(Callback):
    """Stop when the loss or a weight stops being finite. modelc does this by default
    (`fit(terminate_on_nan=False)` turns it off); giving it explicitly changes nothing.
    The run stops at the end of the update that went bad, and the weights go back to
    those of the last finished epoch."""


class CSVLogger(Callback):
    """One row per epoch (the 0-based epoch, then the logs sorted by name), as Keras writes it.
    The file is rewritten atomically after each epoch, so it is never half a row."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = bool(append)
        self.keys: list[str] | None = None
        self.rows: list[dict[str, Any]] = []
        self.kept = ""          # the file's old text, when appending

    def on_train_begin(self, logs=None):
        self.keys, self.rows, self.kept = None, [], ""
        if self.append and os.path.isfile(self.filename):
            with open(self.filename, encoding="utf-8") as f:
                self.kept = f.read()

    def on_epoch_end(self, epoch, logs=None):
        from modelc.files import atomic_write
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        self.rows.append({"epoch": epoch, **{k: logs.get(k, "NA") for k in self.keys}})
        text = self.kept + csv_text(self.rows, self.keys, self.separator, header=not self.kept)
        atomic_write(self.filename, text.encode("utf-8"))

    def get_state(self):
        return {"keys": self.keys, "rows": self.rows, "kept": self.kept}

    def set_state(self, state):
        self.keys, self.rows, self.kept = state["keys"], list(state["rows"]), state["kept"]


class CheckpointFolder(_Monitor):
    """What `modelc train --checkpoint DIR` and a spec's `checkpoint(dir=...)` keep: DIR/last.npz
    after every epoch, and DIR/best.npz whenever `monitor` is the best so far (by default
    val_loss when there is validation, else loss). Each is a full checkpoint that
    `--resume` continues from. It runs after the epoch is recorded (not as a callback),
    so the file holds that epoch's history and every callback's progress."""

    def __init__(self, dir, monitor=None, mode="auto"):
        super().__init__(monitor or "loss", mode)
        self.folder = os.fspath(dir)
        self.chosen = monitor is not None
        self.last_path = os.path.join(self.folder, "last.npz")
        self.best_path = os.path.join(self.folder, "best.npz")
        self.best: float | None = None
        self.started = False

    def prepare(self) -> None:
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as e:
            raise ModelcError(f"cannot create the checkpoint folder '{self.folder}': {e.strerror or e}") from None

    def _best_so_far(self, records) -> float | None:
        values = [r[self.monitor] for r in records if isinstance(r.get(self.monitor), (int, float))]
        if not values:
            return None
        return max(values) if self._better_is_higher() else min(values)

    def __call__(self, model, epoch: int, logs) -> None:
        if not self.chosen:
            self.monitor = "val_loss" if "val_loss" in logs else "loss"
        if not self.started:        # once: the best of the epochs before (a resumed run's too)
            self.best, self.started = self._best_so_far(model.train_log[:-1]), True
        current = self._current(logs)
        model.save(self.last_path)
        if current is not None and self._beats(current, self.best):
            self.best = current
            model.save(self.best_path)


# The callbacks a spec's `callbacks [...]` line may name, by their snake-case names.
SPEC_CALLBACKS = {"early_stopping": EarlyStopping, "reduce_lr_on_plateau": ReduceLROnPlateau,
                  "model_checkpoint": ModelCheckpoint, "csv_logger": CSVLogger, "terminate_on_nan": TerminateOnNaN,
                  "checkpoint": CheckpointFolder}


def options(cls) -> dict[str, Any]:
    """A callback class's options and their defaults, read from its signature (the one place they live)."""
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self"}
