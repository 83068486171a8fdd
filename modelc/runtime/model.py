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
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from modelc import __version__
from modelc.arrays import first_bad, format_dims
from modelc.errors import ModelcError, SpecError, did_you_mean
from modelc.runtime import checkpoint, fitting, parallel, training
from modelc.runtime import data as data_sources
from modelc.runtime.backend import make_backend
from modelc.runtime.binding import bind, bind_x
from modelc.runtime.callbacks import CheckpointFolder
from modelc.runtime.memory import check_fits
from modelc.runtime.progress import History, json_safe
from modelc.runtime.seeding import check_seed, initial_weights
from modelc.runtime.summary import count_params, summarize


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


class Optimizer:
    """Keras's `model.optimizer`, as far as a compiled model has one: its name and its current
    learning rate (after the schedule), which ReduceLROnPlateau lowers without recompiling."""

    def __init__(self, model):
        self._model = model

    @property
    def name(self) -> str | None:
        return self._model.program.optimizer

    def _scheduled(self) -> float:
        from modelc.compiler.formulas import learning_rate
        options = self._model.program.optimizer_options
        return float(learning_rate(self._model.step, options["lr"], tuple(options.get("schedule", ("constant",)))))

    @property
    def learning_rate(self) -> float:
        """As Keras holds it: a float32 value, read back as a Python float."""
        return float(np.float32(self._model.lr_scale * self._scheduled()))

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value) or value <= 0:
            raise ModelcError(f"a learning rate must be a positive number; got {value!r}")
        self._model.lr_scale = value / self._scheduled()

    def __repr__(self) -> str:
        return f"<modelc optimizer {self.name} learning_rate={self.learning_rate:g}>"


@dataclass
class TrainResult:
    """What `train_from_spec` did: the history, and the results expectations are checked against."""
    history: History
    train: dict[str, float] | None
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
        check_fits(program, 1, target, "building")      # before a single weight is drawn
        self.data_dir = data_dir
        self.base_dir = base_dir
        self.backend = make_backend(target, program)
        self.history: History | None = None
        self.optimizer = Optimizer(self) if program.optimizer else None
        self.stop_training = False
        self._callbacks: list = []            # the last fit's, whose progress a checkpoint keeps
        self._callback_states: list = []      # progress read from a checkpoint, for the next fit
        self.group = None       # the processes that train it: None is this process's job (parallel.world)
        self.reset(self.settings.seed if seed is None else seed)

    # ------------------------------------------------------------ state

    @property
    def name(self) -> str:
        return self.program.name

    def reset(self, seed: int) -> None:
        """Fresh weights from `seed`, zero optimizer state, no updates or epochs done."""
        self.seed = check_seed(seed)
        self.step = 0                   # updates done
        self.epochs_done = 0            # epochs finished, over every fit: it keys each epoch's shuffle
        self.shuffle_seed = self.seed
        self.lr_scale = 1.0             # ReduceLROnPlateau's factor on the scheduled learning rate
        self.train_log: list[dict] = []   # every finished epoch's record, over every fit
        params = initial_weights(self.program, self.seed)
        state = self.program.initial_state()
        self.backend.load_state(params, state)

    @property
    def weight_names(self) -> list[str]:
        """The names of `get_weights()`'s arrays, in the same (layer) order: "dense.kernel", ..."""
        return [p.value.name for p in self.program.params]

    def get_weights(self) -> list[np.ndarray]:
        """Every weight (trainable, then a layer's moving statistics) as float32 copies, in layer
        order, as Keras's get_weights; `weight_names` names them, `named_weights()` pairs them."""
        params, _ = self.backend.read_state()
        return [np.array(params[name], np.float32) for name in self.weight_names]

    def named_weights(self) -> dict[str, np.ndarray]:
        """`get_weights()` by name."""
        return dict(zip(self.weight_names, self.get_weights()))

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
        """Write an .npz checkpoint, atomically: the weights, the optimizer state, and where training
        stands (updates and epochs done, the shuffle seed, the learning-rate factor, the history so
        far and the callbacks' progress), so that training can resume from it bit for bit."""
        params, state = self.backend.read_state()
        meta = {"spec_hash": self.program.spec_hash, "model": self.name, "step": int(self.step),
                "target": self.target, "modelc_version": __version__,
                "optimizer": self.program.optimizer, "spec": self.program.spec.source.filename,
                "epoch": int(self.epochs_done), "shuffle_seed": int(self.shuffle_seed),
                "lr_scale": float(self.lr_scale), "stopped": bool(self.stop_training),
                "history": json_safe(self.train_log),
                "callbacks": {f"{i:03d}.{type(c).__name__}": json_safe(c.get_state())
                              for i, c in enumerate(self._callbacks)}}
        kept = {f"{i:03d}/{j:03d}": a for i, c in enumerate(self._callbacks)
                for j, a in enumerate(c.get_arrays() if hasattr(c, "get_arrays") else ())}
        return checkpoint.save(path, {p.value.name: params[p.value.name] for p in self.program.params},
                               {s.name: state[s.name] for s in self.program.state}, meta, kept)

    def export_onnx(self, path: str | os.PathLike, opset: int | None = None) -> int:
        """Write the inference graph with the current weights as an ONNX model (atomically; it takes
        and gives arrays as `predict` does); returns the opset used (`onnx_export.check_opset` says which)."""
        from modelc.compiler.codegen.onnx_export import export
        return export(self.program, self.named_weights(), path, opset)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load a checkpoint written for this spec (by any target), and where its training stood."""
        ck = checkpoint.load(path)
        checkpoint.check_matches(ck, path, self.program)
        params = {p.value.name: np.asarray(ck.params[p.value.name], np.float32) for p in self.program.params}
        meta = ck.meta
        if checkpoint.state_matches(ck, self.program):
            state = {s.name: np.asarray(ck.state[s.name], np.float32) for s in self.program.state}
            self.step = ck.step
            self.lr_scale = float(meta.get("lr_scale", 1.0))
        else:   # the optimizer changed since: the weights still hold, the optimizer starts afresh
            state = self.program.initial_state()
            self.step = 0
            self.lr_scale = 1.0
        self.backend.load_state(params, state)
        self.epochs_done = int(meta.get("epoch", 0))
        self.shuffle_seed = int(meta.get("shuffle_seed", self.seed))
        self.stop_training = bool(meta.get("stopped", False))
        self.train_log = [dict(r) for r in meta.get("history", [])]
        arrays: dict[str, list] = {}
        for key in sorted(ck.callback_arrays):
            arrays.setdefault(key.split("/")[0], []).append(ck.callback_arrays[key])
        self._callback_states = [(key, state, arrays.get(key.split(".")[0], []))
                                 for key, state in sorted(meta.get("callbacks", {}).items())]

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
            callbacks: list | None = None, initial_epoch: int = 0, terminate_on_nan: bool = True) -> History:
        """Train as Keras's fit does: epochs `initial_epoch`..`epochs - 1`. Unset options come from
        the spec's train section, then Keras's defaults (1 epoch, batch 32, shuffled). `seed`
        re-seeds the batch order only; the weights come from the seed the model was compiled with.
        Training stops when the loss or a weight stops being finite (`terminate_on_nan`), keeping
        the last finished epoch's weights; `history.diverged` then says where."""
        self._need_training()
        epochs = positive_int(self.settings.epochs if epochs is None else epochs, "epochs")
        batch = positive_int(self.settings.batch if batch_size is None else batch_size, "batch_size")
        initial_epoch = self._initial_epoch(initial_epoch, epochs)
        shuffle = self.settings.shuffle if shuffle is None else bool(shuffle)
        if seed is not None:
            self.shuffle_seed = check_seed(seed)
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
        history = self._fit(x, y, epochs, batch, val, shuffle, verbose, list(callbacks or ()), initial_epoch,
                            terminate_on_nan)
        if history.diverged is not None and verbose and parallel.world().rank == 0:
            print(f"modelc: {history.diverged}", file=sys.stderr, flush=True)
        return history

    @staticmethod
    def _initial_epoch(initial_epoch, epochs: int) -> int:
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) or initial_epoch < 0:
            raise ModelcError(f"initial_epoch must be a whole number, 0 or more; got {initial_epoch!r}")
        if initial_epoch > epochs:
            raise ModelcError(f"initial_epoch={initial_epoch} is past epochs={epochs}",
                              hint="epochs counts up to the last epoch, as in Keras: fit(epochs=20, initial_epoch=7)")
        return int(initial_epoch)

    def _fit(self, x, y, epochs, batch, val, shuffle, verbose, callbacks, initial_epoch=0,
             terminate_on_nan=True, after_epoch=()) -> History:
        check_fits(self.program, min(batch, len(x)), self.target, "training")
        data = self.backend.upload(x, y)
        val_data = self.backend.upload(*val) if val is not None else None
        args = (self, data, len(x), val_data, len(val[0]) if val is not None else 0, batch, verbose,
                terminate_on_nan)
        states = self._matching_states(callbacks)
        self._callbacks = callbacks
        group = self.group or parallel.world()
        if group.size == 1:     # one process: the whole-epoch compiled loop
            self.history = fitting.run(fitting.EpochRunner(*args), epochs, initial_epoch, shuffle, callbacks,
                                       after_epoch, states)
            return self.history
        runner = parallel.ParallelRunner(group, *args)
        parallel.check_same(group, "the training data", (x, y) + (tuple(val) if val is not None else ()))
        parallel.broadcast_state(group, self)
        with parallel.deferred_interrupts(runner.flag):
            self.history = fitting.run(runner, epochs, initial_epoch, shuffle, callbacks, after_epoch, states)
        return self.history

    def _matching_states(self, callbacks) -> list:
        """The checkpoint's callback progress, when it was written by the same callbacks (used once)."""
        saved, self._callback_states = self._callback_states, []
        if [key.split(".", 1)[1] for key, _, _ in saved] != [type(c).__name__ for c in callbacks]:
            return []
        return [(state, arrays) for _, state, arrays in saved]

    def evaluate(self, x, y, batch_size: int | None = None, verbose: int = 0, *, return_dict: bool = False):
        """Keras's evaluate: `[loss, *metrics]` as floats (the loss alone when there are no
        metrics), or {"loss": ..., "accuracy": ...} with `return_dict=True`."""
        if self.program.evaluate is None:
            raise ModelcError(f"'{self.name}' has no loss, so it cannot be evaluated")
        batch = positive_int(self.settings.batch if batch_size is None else batch_size, "batch_size")
        x, y = bind(self.program, x, y, "evaluation data")
        results = self._evaluate(x, y, batch)
        if return_dict:
            return results
        values = [float(v) for v in results.values()]
        return values if len(values) > 1 else values[0]

    def _evaluate(self, x, y, batch) -> dict[str, float]:
        check_fits(self.program, min(batch, len(x)), self.target, "evaluating")
        data = self.backend.upload(x, y)
        group = self.group or parallel.world()
        sums = (self.backend.evaluate(data, batch) if group.size == 1
                else parallel.evaluate_shared(group, self.backend, data, batch))
        return self.program.results(sums, len(x))

    def predict(self, x, batch_size: int | None = None) -> np.ndarray:
        """The network's output for each sample, float32 (samples, *output shape)."""
        batch = positive_int(self.settings.batch if batch_size is None else batch_size, "batch_size")
        x = bind_x(self.program, x, "prediction input")
        check_fits(self.program, min(batch, len(x)), self.target, "predicting with")
        return self.backend.predict(self.backend.upload(x), batch)

    # ------------------------------------------------------------ the spec's train section

    def load_splits(self, data_dir: str | None = None, quiet: bool = False):
        """The spec's data source, read or generated, as `Splits` (a located error if it names none)."""
        spec = self.program.spec
        if self.settings.data is None:
            raise SpecError("the train section names no data source",
                            spec.train[0].pos if spec.train else spec.pos, spec.source,
                            hint="add a line such as 'data mnist(scale=1/255)' to train { }")
        try:
            return data_sources.load(self.settings.data, data_dir=data_dir or self.data_dir,
                                     base_dir=self.base_dir, quiet=quiet, program=self.program)
        except SpecError as err:
            raise err.located(spec.source) from None
        except ModelcError as err:      # the source's own mistake (a size, a file): blame its line
            raise self._spec_error(err, "data") from None

    def load_data(self, data_dir: str | None = None, quiet: bool = False):
        """The spec's data as Keras's datasets give it: `(x_train, y_train), (x_test, y_test)`
        (the test pair is `(None, None)` when the source has no test split)."""
        splits = self.load_splits(data_dir, quiet)
        test = (splits.test.x, splits.test.y) if splits.test is not None else (None, None)
        return (splits.train.x, splits.train.y), test

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
                        verbose: int = 1, quiet_data: bool = False, splits=None, initial_epoch: int = 0,
                        callbacks: list | None = None, checkpoint_dir: str | None = None,
                        monitor: str | None = None, after_epoch=()) -> TrainResult:
        """Run the spec's train section (data, batch, epochs, shuffle, seed, validate, callbacks),
        then evaluate on the source's test split. A `seed` before any training re-draws the
        weights. `callbacks` come after the spec's own; `checkpoint_dir` (and the value it
        `monitor`s for best.npz) takes the place of the spec's checkpoint(dir=...);
        `after_epoch` hooks, (model, epoch, logs), run once each epoch is recorded."""
        self._need_training()
        settings = self.settings
        training.check_static(self.program, settings)
        if seed is not None and self.step == 0 and seed != self.seed:
            self.reset(seed)
        if seed is not None:
            self.shuffle_seed = check_seed(seed)
        epochs = positive_int(settings.epochs if epochs is None else epochs, "epochs")
        batch = positive_int(settings.batch if batch_size is None else batch_size, "batch")
        initial_epoch = self._initial_epoch(initial_epoch, epochs)
        spec_callbacks = training.make_callbacks(settings, self.program.spec, self.base_dir)
        folders = [c for c in spec_callbacks if isinstance(c, CheckpointFolder)]
        spec_callbacks = [c for c in spec_callbacks if not isinstance(c, CheckpointFolder)]
        if checkpoint_dir is not None:
            folders = [CheckpointFolder(checkpoint_dir, monitor)]
        for folder in folders:
            folder.prepare()
        if splits is None:
            splits = self.load_splits(data_dir, quiet=quiet_data)
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
        shuffle = settings.shuffle if shuffle is None else shuffle
        history = self._fit(x, y, epochs, batch, val, shuffle, verbose, spec_callbacks + list(callbacks or ()),
                            initial_epoch, True, folders + list(after_epoch))
        if history.diverged is not None:
            return TrainResult(history, None, None, None, 0, settings)
        test_results = self._evaluate(test[0], test[1], batch) if test is not None else None
        last = History(self.train_log)      # a resumed run's results are its last epoch's
        return TrainResult(history, last.split("") or {}, last.split("val_") if val is not None else None,
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
