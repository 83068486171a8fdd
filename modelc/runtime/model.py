"""The compiled model a person holds: weights, optimizer state, and Keras's verbs.

The runtime owns everything that must agree across targets: the initial
weights and the batch order of every epoch (both drawn on the host from the
seed, see `seeding`), and the update count. A backend only runs the graphs,
so `numpy`, `cpu` and `cuda` see the same numbers and the same batches.
Every array a verb takes is checked against the spec's declarations first
(`binding`), so a mistake is a `ModelcError` that says what to do.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from modelc import __version__
from modelc.arrays import first_bad, format_dims
from modelc.errors import ModelcError, SpecError, did_you_mean
from modelc.runtime import checkpoint, training
from modelc.runtime import data as data_sources
from modelc.runtime.backend import make_backend
from modelc.runtime.binding import bind, bind_x
from modelc.runtime.progress import History, Progress
from modelc.runtime.seeding import check_seed, initial_weights, shuffle_rng
from modelc.runtime.summary import count_params, summarize

# Wall time of work per backend call while a live bar is shown: short enough
# for the bar to move, long enough that the per-call overhead does not show.
CHUNK_SECONDS = 0.15
MIN_CHUNKS_PER_EPOCH = 10


def split_last(x, y, fraction: float, what: str):
    """Keras's validation_split: the last `fraction` of the samples, taken before shuffling."""
    cut = int(math.floor(len(x) * (1.0 - fraction)))
    if cut < 1 or cut >= len(x):
        raise ModelcError(f"{what} of {len(x)} samples leaves {cut} for training and {len(x) - cut} "
                          "for validation; both need at least one")
    return x[:cut], y[:cut], (x[cut:], y[cut:])


def positive_int(value: Any, what: str) -> int:
    """`value` as an int, or a ModelcError unless it is a whole number, at least 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ModelcError(f"{what} must be a whole number, at least 1; got {value!r}")
    return int(value)


@dataclass
class TrainResult:
    """What `train_from_spec` did: the history, and the results expectations are checked against."""
    history: History
    train: dict[str, float]
    val: dict[str, float] | None
    test: dict[str, float] | None
    test_samples: int = 0
    settings: training.TrainSettings | None = None

    @property
    def results(self) -> dict[str, dict[str, float] | None]:
        return {"train": self.train, "val": self.val, "test": self.test}


class Model:
    """A compiled spec on one target: `fit`, `evaluate`, `predict`, `save`, `summary`, weights."""

    def __init__(self, program, target: str = "cpu", *, seed: int | None = None,
                 data_dir: str | None = None, base_dir: str | None = None):
        self.program = program
        self.target = target
        self.settings = training.settings(program.spec)
        self.data_dir = data_dir
        self.base_dir = base_dir
        self.backend = make_backend(target, program)
        self.history: History | None = None
        self.reset(self.settings.seed if seed is None else seed)

    # ------------------------------------------------------------ state

    @property
    def name(self) -> str:
        return self.program.name

    def reset(self, seed: int) -> None:
        """Fresh weights from `seed`, zero optimizer state, no updates done."""
        self.seed = check_seed(seed)
        self.step = 0
        self._shuffle = shuffle_rng(self.seed)
        params = initial_weights(self.program, self.seed)
        state = self.program.initial_state()
        self.backend.load_state(params, state)

    def get_weights(self) -> dict[str, np.ndarray]:
        """The parameters by name ("dense.kernel", ...), as float32 arrays (copies)."""
        params, _ = self.backend.read_state()
        return {p.value.name: np.array(params[p.value.name], np.float32) for p in self.program.params}

    def set_weights(self, weights: dict[str, Any] | list) -> None:
        """Replace the parameters; a dict by name, or a list in `get_weights()` order. Shapes are checked."""
        names = [p.value.name for p in self.program.params]
        shapes = {p.value.name: tuple(p.value.shape) for p in self.program.params}
        if isinstance(weights, (list, tuple)):
            if len(weights) != len(names):
                raise ModelcError(f"set_weights got {len(weights)} arrays, but '{self.name}' has "
                                  f"{len(names)} parameters: {', '.join(names)}")
            weights = dict(zip(names, weights))
        if not isinstance(weights, dict):
            raise ModelcError("set_weights takes a dict of arrays by parameter name (as get_weights gives)")
        unknown_names = [k for k in weights if k not in shapes]
        if unknown_names:
            hint = did_you_mean(unknown_names[0], names)
            raise ModelcError(f"'{self.name}' has no parameter '{unknown_names[0]}'",
                              hint=hint or "its parameters: " + ", ".join(names))
        missing = [n for n in names if n not in weights]
        if missing:
            raise ModelcError(f"set_weights is missing parameter(s): {', '.join(missing)}",
                              hint="pass every parameter; get_weights() gives the full dict")
        params, state = self.backend.read_state()
        for name in names:
            array = np.asarray(weights[name])
            if array.dtype.kind not in "biuf":
                raise ModelcError(f"parameter '{name}' must be numbers, not {array.dtype}")
            if tuple(array.shape) != shapes[name]:
                raise ModelcError(f"parameter '{name}' has shape {format_dims(shapes[name])}, but the array "
                                  f"given has shape {format_dims(array.shape)}")
            array = np.ascontiguousarray(array, np.float32)
            if not np.isfinite(array).all():
                raise ModelcError(f"parameter '{name}' holds a non-finite value: {first_bad(array)}")
            params[name] = array
        self.backend.load_state(params, state)

    def save(self, path: str | os.PathLike) -> Path:
        """Write parameters, optimizer state and the update count to an .npz checkpoint, atomically."""
        params, state = self.backend.read_state()
        meta = {"spec_hash": self.program.spec_hash, "model": self.name, "step": int(self.step),
                "target": self.target, "modelc_version": __version__,
                "optimizer": self.program.optimizer, "spec": self.program.spec.source.filename}
        return checkpoint.save(path, {p.value.name: params[p.value.name] for p in self.program.params},
                               {s.name: state[s.name] for s in self.program.state}, meta)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load a checkpoint written for this spec (by any target)."""
        ck = checkpoint.load(path)
        checkpoint.check_matches(ck, path, self.program)
        params = {p.value.name: np.asarray(ck.params[p.value.name], np.float32) for p in self.program.params}
        if checkpoint.state_matches(ck, self.program):
            state = {s.name: np.asarray(ck.state[s.name], np.float32) for s in self.program.state}
            self.step = ck.step
        else:   # the optimizer changed since: the weights still hold, the optimizer starts afresh
            state = self.program.initial_state()
            self.step = 0
        self.backend.load_state(params, state)

    def warm_up(self) -> float:
        """Compile every graph now (or load its code from the cache), so that no epoch,
        evaluate or predict pays for it; the weights and state are kept. Returns seconds."""
        start = time.perf_counter()
        self.backend.compile()
        return time.perf_counter() - start

    # ------------------------------------------------------------ running

    def _need_training(self) -> None:
        if self.program.train is None:
            raise ModelcError(f"'{self.name}' has no loss, so it cannot be trained",
                              hint="add a target, a loss and an optimizer to the spec")

    def fit(self, x, y, epochs: int | None = None, batch_size: int | None = None, *,
            validation_data: tuple | None = None, validation_split: float | None = None,
            shuffle: bool | None = None, seed: int | None = None, verbose: int = 1,
            callbacks: list | None = None) -> History:
        """Train as Keras's fit does. Unset options come from the spec's train section,
        then Keras's defaults (1 epoch, batch 32, shuffled). `seed` re-seeds the batch
        order only; the weights come from the seed the model was compiled with."""
        self._need_training()
        epochs = positive_int(self.settings.epochs if epochs is None else epochs, "epochs")
        batch = positive_int(self.settings.batch if batch_size is None else batch_size, "batch_size")
        shuffle = self.settings.shuffle if shuffle is None else bool(shuffle)
        if seed is not None:
            self._shuffle = shuffle_rng(check_seed(seed))
        x, y = bind(self.program, x, y, "training data")
        val = None
        if validation_data is not None and validation_split is not None:
            raise ModelcError("give validation_data or validation_split, not both")
        if validation_split is not None:
            if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)) \
                    or not 0 < validation_split < 1:
                raise ModelcError(f"validation_split must be a fraction between 0 and 1; got {validation_split!r}")
            x, y, val = split_last(x, y, validation_split, f"validation_split={validation_split:g}")
        elif validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ModelcError("validation_data must be a pair (x, y)")
            val = bind(self.program, validation_data[0], validation_data[1], "validation data")
        return self._fit(x, y, epochs, batch, val, shuffle, verbose, callbacks)

    def _fit(self, x, y, epochs, batch, val, shuffle, verbose, callbacks) -> History:
        n = len(x)
        batches = -(-n // batch)
        data = self.backend.upload(x, y)
        val_data = self.backend.upload(*val) if val is not None else None
        progress = Progress(epochs, batches, verbose)
        if not self.backend.compiled:   # its own step, so epoch 1's time is the training alone
            progress.compiled(self.warm_up())
        history = History()
        self.history = history
        try:
            for epoch in range(1, epochs + 1):
                order = self._shuffle.permutation(n) if shuffle else np.arange(n, dtype=np.int64)
                order = np.ascontiguousarray(order, dtype=np.int64)
                progress.start_epoch(epoch)
                start = time.perf_counter()
                sums = self._train_epoch(data, order, batch, batches, n, progress)
                train_seconds = time.perf_counter() - start
                logs = self.program.results(sums, n)
                if val_data is not None:
                    val_sums = self.backend.evaluate(val_data, batch)
                    logs.update({f"val_{k}": v for k, v in self.program.results(val_sums, len(val[0])).items()})
                seconds = time.perf_counter() - start
                record = {"epoch": epoch, **logs, "seconds": seconds}
                history.epochs.append(record)
                progress.end_epoch(epoch, seconds, logs, n / train_seconds if train_seconds > 0 else None)
                for callback in callbacks or ():
                    hook = getattr(callback, "on_epoch_end", callback)
                    hook(epoch, dict(record))
        finally:
            progress.close()
        return history

    def _train_epoch(self, data, order, batch, batches, n, progress: Progress) -> np.ndarray:
        """One epoch: a single backend call, or chunks of about CHUNK_SECONDS when a bar is live."""
        if not progress.live:
            sums = np.asarray(self.backend.train(data, order, batch, 0, batches, self.step), np.float64)
            self.step += batches
            return sums
        totals = np.zeros(len(self.program.result_names))
        chunk = max(1, -(-batches // (MIN_CHUNKS_PER_EPOCH * 5)))
        first = 0
        while first < batches:
            last = min(batches, first + chunk)
            t = time.perf_counter()
            totals += self.backend.train(data, order, batch, first, last, self.step)
            per_batch = (time.perf_counter() - t) / (last - first)
            self.step += last - first
            done = min(last * batch, n)
            progress.advance(last - first, self.program.results(totals, done))
            chunk = max(1, min(int(CHUNK_SECONDS / max(per_batch, 1e-9)), -(-batches // MIN_CHUNKS_PER_EPOCH)))
            first = last
        return totals

    def evaluate(self, x, y, batch_size: int | None = None) -> dict[str, float]:
        """The loss and each metric over the data: {"loss": ..., "accuracy": ...}."""
        if self.program.evaluate is None:
            raise ModelcError(f"'{self.name}' has no loss, so it cannot be evaluated")
        batch = positive_int(self.settings.batch if batch_size is None else batch_size, "batch_size")
        x, y = bind(self.program, x, y, "evaluation data")
        return self._evaluate(x, y, batch)

    def _evaluate(self, x, y, batch) -> dict[str, float]:
        sums = self.backend.evaluate(self.backend.upload(x, y), batch)
        return self.program.results(sums, len(x))

    def predict(self, x, batch_size: int | None = None) -> np.ndarray:
        """The network's output for each sample, float32 (samples, *output shape)."""
        batch = positive_int(self.settings.batch if batch_size is None else batch_size, "batch_size")
        x = bind_x(self.program, x, "prediction input")
        return self.backend.predict(self.backend.upload(x), batch)

    # ------------------------------------------------------------ the spec's train section

    def load_data(self, data_dir: str | None = None, quiet: bool = False):
        """The spec's data source, read or generated (a located error if the spec names none)."""
        if self.settings.data is None:
            spec = self.program.spec
            raise SpecError("the train section names no data source",
                            spec.train[0].pos if spec.train else spec.pos, spec.source,
                            hint="add a line such as 'data mnist(scale=1/255)' to train { }")
        return data_sources.load(self.settings.data, data_dir=data_dir or self.data_dir,
                                 base_dir=self.base_dir, quiet=quiet)

    def _spec_error(self, err: ModelcError, key: str) -> SpecError:
        """A data mistake, blamed on the train section's line that named the data."""
        if isinstance(err, SpecError):
            return err
        pos = self.settings.positions.get(key)
        if pos is None:
            return err
        return SpecError(err.message, pos, self.program.spec.source, hint=err.hint)

    def train_from_spec(self, data_dir: str | None = None, *, epochs: int | None = None,
                        batch_size: int | None = None, seed: int | None = None, shuffle: bool | None = None,
                        verbose: int = 1, quiet_data: bool = False, splits=None) -> TrainResult:
        """Run the spec's train section (data, batch, epochs, shuffle, seed, validate), then
        evaluate on the source's test split. A `seed` before any training re-draws the weights."""
        self._need_training()
        settings = self.settings
        if seed is not None and self.step == 0 and seed != self.seed:
            self.reset(seed)
        seed = self.seed if seed is None else seed
        if splits is None:
            splits = self.load_data(data_dir, quiet=quiet_data)
        source = str(settings.data) if settings.data is not None else "the data"
        try:
            x, y = bind(self.program, splits.train.x, splits.train.y, f"the training split of {source}")
            test = (bind(self.program, splits.test.x, splits.test.y, f"the test split of {source}")
                    if splits.test is not None else None)
        except ModelcError as err:
            raise self._spec_error(err, "data") from None
        val = None
        if settings.validate == "test":
            if test is None:
                raise SpecError(f"'validate test', but {source} has no test split",
                                settings.positions["validate"], self.program.spec.source,
                                hint="use 'validate split(0.1)', or give the source a test split")
            val = test
        elif isinstance(settings.validate, float):
            try:
                x, y, val = split_last(x, y, settings.validate, f"validate split({settings.validate:g})")
            except ModelcError as err:
                raise SpecError(err.message, settings.positions["validate"], self.program.spec.source) from None
        epochs = positive_int(settings.epochs if epochs is None else epochs, "epochs")
        batch = positive_int(settings.batch if batch_size is None else batch_size, "batch")
        shuffle = settings.shuffle if shuffle is None else shuffle
        self._shuffle = shuffle_rng(check_seed(seed))
        history = self._fit(x, y, epochs, batch, val, shuffle, verbose, None)
        test_results = self._evaluate(test[0], test[1], batch) if test is not None else None
        return TrainResult(history, history.split("") or {}, history.split("val_") if val is not None else None,
                           test_results, len(test[0]) if test is not None else 0, settings)

    def check_expectations(self, results: dict | TrainResult) -> list[training.ExpectationResult]:
        """The spec's `expect` section against results ({"train"/"val"/"test": {...}} or a TrainResult)."""
        if isinstance(results, TrainResult):
            results = results.results
        return training.evaluate_expectations(self.program.spec, self.program.shown_names, results)

    # ------------------------------------------------------------ description

    def count_params(self) -> int:
        return count_params(self.program)

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Print a Keras-like table: layer (type), output shape, parameter count, totals.
        As in Keras it prints rather than returns; `modelc.runtime.summary.summarize(program)`
        gives the text."""
        print_fn(summarize(self.program))

    def __repr__(self) -> str:
        return f"<modelc.Model '{self.name}' target={self.target} params={self.count_params():,} step={self.step}>"
