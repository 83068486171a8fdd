"""The compiled model a person holds: weights, optimizer state, and Keras's verbs.

The runtime owns everything that must agree across targets: the initial
weights (drawn on the host from the seed, in `program.params` order), the
batch order of every epoch (drawn from a separate seeded generator), and the
update count. A backend only runs the graphs, so `numpy`, `cpu` and `cuda`
see the same numbers and the same batches, and the same seed gives the same
weights bit for bit on the same machine.

Data is checked when it is bound, against the shapes the spec declares, so a
mistake Keras would report deep in a stack trace ("Shapes (32, 1) and
(32, 10) are incompatible") is a `ModelcError` that says what is wrong and
what to do.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from modelc.compiler.ir import format_shape
from modelc.errors import ModelcError, SpecError
from modelc.runtime import checkpoint, training
from modelc.runtime.data.core import as_numbers, format_dims
from modelc.runtime.progress import History, Progress

# Wall time of work per backend call while a live bar is shown: short enough
# for the bar to move, long enough that the per-call overhead does not show.
CHUNK_SECONDS = 0.15
MIN_CHUNKS_PER_EPOCH = 10

LAYER_TYPES = {"dense": "Dense", "flatten": "Flatten", "reshape": "Reshape", "dropout": "Dropout",
               "add": "Add", "concat": "Concatenate", "softmax": "Softmax", "log_softmax": "LogSoftmax"}


def make_backend(target: str, program):
    """The target's backend, with a clear error when it cannot run here."""
    from modelc.compiler.codegen import TARGETS, get_backend
    if target not in TARGETS:
        raise ModelcError(f"unknown target '{target}'", hint="choose one of: " + ", ".join(TARGETS))
    if target == "cuda" and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        ok, reason = cuda_status()
        if not ok:
            raise ModelcError(f"the cuda target cannot run here: {reason}",
                              hint="run 'modelc doctor' for details, or use --target cpu")
    try:
        return get_backend(target, program)
    except ModuleNotFoundError as e:
        raise ModelcError(f"the '{target}' target needs the Python package '{e.name}', which is not "
                          "installed", hint=f"pip install {e.name}") from None


def cuda_status() -> tuple[bool, str]:
    from modelc.doctor import cuda_available
    return cuda_available()


def split_last(x, y, fraction: float, what: str):
    """Keras's validation_split: the last `fraction` of the samples, taken before shuffling."""
    cut = int(math.floor(len(x) * (1.0 - fraction)))
    if cut < 1 or cut >= len(x):
        raise ModelcError(f"{what} of {len(x)} samples leaves {cut} for training and {len(x) - cut} "
                          "for validation; both need at least one")
    return x[:cut], y[:cut], (x[cut:], y[cut:])


def initial_weights(program, seed: int) -> dict[str, np.ndarray]:
    """Every parameter drawn from one generator seeded with `seed`, in `program.params` order."""
    from modelc.compiler.catalog import initialize
    rng = np.random.default_rng(seed)
    return {p.value.name: initialize(p.init, rng, tuple(p.value.shape), p.fan_in, p.fan_out)
            for p in program.params}


def shuffle_rng(seed: int) -> np.random.Generator:
    """The batch-order generator: seeded from `seed` but a stream of its own, apart from the weights'."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))


def _check_seed(seed: Any, what: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ModelcError(f"{what} must be a whole number, 0 or more; got {seed!r}")
    return int(seed)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ModelcError(f"{what} must be a whole number, at least 1; got {value!r}")
    return int(value)


def _first_bad(a: np.ndarray) -> str:
    i = np.unravel_index(int(np.argmax(~np.isfinite(a))), a.shape)
    return f"{a[i]!r} at index {i[0] if len(i) == 1 else tuple(int(k) for k in i)}"


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
        self.seed = _check_seed(seed)
        self.step = 0
        self._shuffle = shuffle_rng(self.seed)
        params = initial_weights(self.program, self.seed)
        state = {s.name: np.zeros(s.shape, np.float32) for s in self.program.state}
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
            from modelc.errors import did_you_mean
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
                raise ModelcError(f"parameter '{name}' holds a non-finite value: {_first_bad(array)}")
            params[name] = array
        self.backend.load_state(params, state)

    def save(self, path: str | os.PathLike) -> Path:
        """Write parameters, optimizer state and the update count to an .npz checkpoint, atomically."""
        from modelc import __version__
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
            state = {s.name: np.zeros(s.shape, np.float32) for s in self.program.state}
            self.step = 0
        self.backend.load_state(params, state)

    def warm_up(self) -> float:
        """Run every graph once on one zero sample, so a target compiles (and caches) its code
        now rather than in the first epoch; the weights and state are put back. Returns seconds."""
        start = time.perf_counter()
        params, state = self.backend.read_state()
        step = self.step
        x = np.zeros((1,) + tuple(self.program.input.shape[1:]), np.float32)
        target = self.program.target
        if target is not None:
            y = (np.zeros(1, np.int64) if target.format == "sparse"
                 else np.zeros((1,) + tuple(target.value.shape[1:]), np.float32))
            data = self.backend.upload(x, y)
            if self.program.train is not None:
                self.backend.train(data, np.zeros(1, np.int64), 1, 0, 1, 0)
            self.backend.evaluate(data, 1)
        self.backend.predict(self.backend.upload(x), 1)
        self.backend.load_state(params, state)
        self.step = step
        return time.perf_counter() - start

    # ------------------------------------------------------------ data binding

    def _declared(self, decl) -> str:
        where = f"{self.program.spec.source.filename}:{decl.pos.line}" if decl.pos.line else ""
        return f" ({where})" if where else ""

    def _bind_x(self, x: Any, where: str) -> np.ndarray:
        value = self.program.input
        decl = self.program.spec.inputs[0]
        x = as_numbers(x, f"{where}: the features")
        expected = tuple(value.shape[1:])
        if x.ndim == 0 or tuple(x.shape[1:]) != expected:
            declared = f"'{value.name}: f32{format_shape(expected)}'"
            message = (f"{where}: the input is declared {declared}{self._declared(decl)}, so the data "
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
                              f"{_first_bad(x)}", hint="remove or fill the missing values first")
        return x

    def _bind_y(self, y: Any, samples: int, where: str) -> np.ndarray:
        from modelc.runtime.data import check_labels
        target = self.program.target
        if target is None:
            raise ModelcError(f"'{self.name}' has no loss, so it cannot be trained or evaluated",
                              hint="add a target and a loss to the spec")
        name = target.value.name
        decl = self.program.spec.targets[0]
        loss = self.program.loss_name
        y = as_numbers(y, f"{where}: the labels")
        if y.ndim == 0 or len(y) != samples:
            raise ModelcError(f"{where}: there are {samples} samples of features but the labels have shape "
                              f"{format_dims(y.shape)}", hint="give one label per sample")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ModelcError(f"{where}: the labels hold a value that is not a finite number: {_first_bad(y)}")
        classes = target.classes
        if target.format == "sparse":
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.ndim == 2:
                raise ModelcError(
                    f"{where}: the labels have shape {format_dims(y.shape)}, one-hot vectors, but the target "
                    f"'{name}' is declared as integer class labels (int[] classes {classes})"
                    f"{self._declared(decl)} and the loss is {loss}",
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
                    f"is declared one-hot (f32[{classes}] onehot){self._declared(decl)} and the loss is {loss}",
                    hint=(f"one-hot them (modelc.runtime.data.one_hot(y, {classes}), or onehot=true in the "
                          f"data source), or declare 'target {name}: int[] classes {classes}' and use "
                          "sparse_categorical_crossentropy"))
            if tuple(y.shape[1:]) != (classes,):
                raise ModelcError(f"{where}: the labels have shape {format_dims(y.shape)}, but the target '{name}' "
                                  f"is declared f32[{classes}] onehot{self._declared(decl)}",
                                  hint=f"give {classes} entries per sample, or change the declaration")
            return np.ascontiguousarray(y, dtype=np.float32)
        expected = tuple(target.value.shape[1:])
        if y.ndim == 1 and expected == (1,):
            y = y[:, None]
        if tuple(y.shape[1:]) != expected:
            raise ModelcError(f"{where}: the targets have shape {format_dims(y.shape)}, but '{name}' is declared "
                              f"f32{format_shape(expected)}{self._declared(decl)}",
                              hint=f"give targets of shape (samples, {', '.join(map(str, expected))}), "
                              "or change the declaration")
        return np.ascontiguousarray(y, dtype=np.float32)

    def _bind(self, x, y, where: str) -> tuple[np.ndarray, np.ndarray]:
        x = self._bind_x(x, where)
        return x, self._bind_y(y, len(x), where)

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
        epochs = _positive_int(self.settings.epochs if epochs is None else epochs, "epochs")
        batch = _positive_int(self.settings.batch if batch_size is None else batch_size, "batch_size")
        shuffle = self.settings.shuffle if shuffle is None else bool(shuffle)
        if seed is not None:
            self._shuffle = shuffle_rng(_check_seed(seed))
        x, y = self._bind(x, y, "training data")
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
            val = self._bind(validation_data[0], validation_data[1], "validation data")
        return self._fit(x, y, epochs, batch, val, shuffle, verbose, callbacks)

    def _fit(self, x, y, epochs, batch, val, shuffle, verbose, callbacks) -> History:
        n = len(x)
        batches = -(-n // batch)
        data = self.backend.upload(x, y)
        val_data = self.backend.upload(*val) if val is not None else None
        names = self.program.result_names
        progress = Progress(epochs, batches, verbose)
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
                logs = {k: float(s) / n for k, s in zip(names, sums)}
                if val_data is not None:
                    val_sums = self.backend.evaluate(val_data, batch)
                    logs.update({f"val_{k}": float(s) / len(val[0]) for k, s in zip(names, val_sums)})
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
            progress.advance(last - first, {k: totals[i] / done for i, k in enumerate(self.program.result_names)})
            chunk = max(1, min(int(CHUNK_SECONDS / max(per_batch, 1e-9)), -(-batches // MIN_CHUNKS_PER_EPOCH)))
            first = last
        return totals

    def evaluate(self, x, y, batch_size: int | None = None) -> dict[str, float]:
        """The loss and each metric over the data: {"loss": ..., "accuracy": ...}."""
        if self.program.evaluate is None:
            raise ModelcError(f"'{self.name}' has no loss, so it cannot be evaluated")
        batch = _positive_int(self.settings.batch if batch_size is None else batch_size, "batch_size")
        x, y = self._bind(x, y, "evaluation data")
        return self._evaluate(x, y, batch)

    def _evaluate(self, x, y, batch) -> dict[str, float]:
        sums = self.backend.evaluate(self.backend.upload(x, y), batch)
        return {k: float(s) / len(x) for k, s in zip(self.program.result_names, sums)}

    def predict(self, x, batch_size: int | None = None) -> np.ndarray:
        """The network's output for each sample, float32 (samples, *output shape)."""
        batch = _positive_int(self.settings.batch if batch_size is None else batch_size, "batch_size")
        x = self._bind_x(x, "prediction input")
        return self.backend.predict(self.backend.upload(x), batch)

    # ------------------------------------------------------------ the spec's train section

    def load_data(self, data_dir: str | None = None, quiet: bool = False):
        """The spec's data source, read or generated (a located error if the spec names none)."""
        from modelc.runtime import data as data_sources
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
            x, y = self._bind(splits.train.x, splits.train.y, f"the training split of {source}")
            test = (self._bind(splits.test.x, splits.test.y, f"the test split of {source}")
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
        epochs = _positive_int(settings.epochs if epochs is None else epochs, "epochs")
        batch = _positive_int(settings.batch if batch_size is None else batch_size, "batch")
        shuffle = settings.shuffle if shuffle is None else shuffle
        self._shuffle = shuffle_rng(_check_seed(seed))
        history = self._fit(x, y, epochs, batch, val, shuffle, verbose, None)
        test_results = self._evaluate(test[0], test[1], batch) if test is not None else None
        return TrainResult(history, history.split("") or {}, history.split("val_") if val is not None else None,
                           test_results, len(test[0]) if test is not None else 0, settings)

    def check_expectations(self, results: dict | TrainResult) -> list[training.ExpectationResult]:
        """The spec's `expect` section against results ({"train"/"val"/"test": {...}} or a TrainResult)."""
        if isinstance(results, TrainResult):
            results = results.results
        return training.evaluate_expectations(self.program.spec, self.program.result_names, results)

    # ------------------------------------------------------------ description

    def count_params(self) -> int:
        return count_params(self.program)

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Print a Keras-like table: layer (type), output shape, parameter count, totals.
        As in Keras it prints rather than returns; `summarize(program)` gives the text."""
        print_fn(summarize(self.program))

    def __repr__(self) -> str:
        return f"<modelc.Model '{self.name}' target={self.target} params={self.count_params():,} step={self.step}>"


def count_params(program) -> int:
    return sum(int(np.prod(p.value.shape)) for p in program.params)


def summarize(program) -> str:
    """The Keras-like summary table of a program (no backend needed)."""
    def shape_of(value) -> str:
        return "(None, " + ", ".join(str(d) for d in value.shape[1:]) + ")"

    # A chain reads like Keras's Sequential summary; a graph gets "Connected to", as a functional model.
    previous = [program.input.name]
    chain = True
    for layer in program.layers:
        chain = chain and layer.inputs == previous
        previous = [layer.name]
    rows = [] if chain else [(f"{program.input.name} (InputLayer)", shape_of(program.input), "0", "-")]
    for layer in program.layers:
        kind = LAYER_TYPES.get(layer.kind, "Activation")
        count = sum(int(np.prod(p.shape)) for p in layer.params)
        row = (f"{layer.name} ({kind})", shape_of(layer.output), f"{count:,}")
        rows.append(row if chain else row + (", ".join(layer.inputs),))
    heads = ("Layer (type)", "Output Shape", "Param #") + (() if chain else ("Connected to",))
    widths = [max(low, len(h), *(len(r[i]) for r in rows)) + 3
              for i, (h, low) in enumerate(zip(heads, (25, 22, 8, 16)))]
    width = sum(widths)

    def line(cells):
        return " " + "".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    total = count_params(program)
    size = _bytes(total * 4)
    out = [f'Model: "{program.name}"', "_" * width, line(heads), "=" * width]
    for i, row in enumerate(rows):
        out.append(line(row))
        if i < len(rows) - 1:
            out.append(" " + "-" * (width - 1))
    out += ["=" * width, f"Total params: {total:,} ({size})", f"Trainable params: {total:,} ({size})",
            "Non-trainable params: 0 (0.00 B)", "_" * width]
    return "\n".join(out)


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"
