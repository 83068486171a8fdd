"""The epoch loop behind `Model.fit`: callbacks, divergence, interrupts, checkpoints.

Each epoch starts from a copy of the weights and optimizer state. When the loss
or a weight stops being finite (Keras's TerminateOnNaN, on by default), the
epoch is replayed from that copy, a few batches at a time and then one by one,
to name the update where it happened; the weights go back to the copy, so what
is kept and written is always the last finished epoch. An interrupt (Ctrl-C,
SIGTERM) in the middle of an epoch puts the copy back too before it goes on up,
so nothing half-trained is ever saved.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from modelc.runtime.callbacks import check_hooks
from modelc.runtime.progress import History, Progress
from modelc.runtime.seeding import epoch_order

# Wall time of work per backend call: short enough for a live bar to move and for
# Ctrl-C to be answered soon, long enough that the per-call overhead does not show.
CHUNK_SECONDS = 0.15
QUIET_CHUNK_SECONDS = 1.0
MIN_CHUNKS_PER_EPOCH = 10
REPLAY_CHUNK = 32           # batches per call while looking for the update that diverged


@dataclass
class Divergence:
    """Where training stopped being finite."""
    epoch: int              # 1-based, as the progress lines count
    batch: int              # 1-based within the epoch
    batches: int
    step: int               # the update's number over the model's whole training, 1-based
    what: str               # "the loss became NaN", "weight 'dense.kernel' became infinite"
    kept_epoch: int         # the epoch whose weights were kept (0: the initial weights)

    def __str__(self) -> str:
        kept = (f"the weights of epoch {self.kept_epoch}, the last finished one" if self.kept_epoch
                else "the initial weights (no epoch finished)")
        return (f"training diverged in epoch {self.epoch}, batch {self.batch:,} of {self.batches:,} "
                f"(update {self.step:,}): {self.what}; kept {kept}")


def _nonfinite(values: np.ndarray) -> str:
    return "NaN" if np.isnan(values).any() else "infinite"


def _what_diverged(model, sums) -> str | None:
    """Why the model is no longer finite, or None when it still is."""
    loss = float(sums[0])
    if not math.isfinite(loss):
        return f"the loss became {'NaN' if math.isnan(loss) else 'infinite'}"
    params, _ = model.backend.read_state()
    for info in model.program.params:
        array = params[info.value.name]
        if not np.isfinite(array).all():
            return f"weight '{info.value.name}' became {_nonfinite(array)}"
    return None


class Snapshot:
    """The weights, optimizer state and counters at an epoch's start, to go back to."""

    def __init__(self, model):
        params, state = model.backend.read_state()
        self.params = {k: np.array(v, copy=True) for k, v in params.items()}
        self.state = {k: np.array(v, copy=True) for k, v in state.items()}
        self.step = model.step

    def restore(self, model) -> None:
        model.backend.load_state({k: v.copy() for k, v in self.params.items()},
                                 {k: v.copy() for k, v in self.state.items()})
        model.step = self.step


class EpochRunner:
    """One fit's epochs over resident data."""

    def __init__(self, model, data, n, val_data, val_n, batch, verbose, terminate_on_nan):
        self.model, self.data, self.n = model, data, n
        self.val_data, self.val_n = val_data, val_n
        self.batch = batch
        self.batches = -(-n // batch)
        self.verbose = verbose
        self.terminate_on_nan = terminate_on_nan

    def _call(self, order, first, last) -> np.ndarray:
        model = self.model
        with np.errstate(all="ignore"):     # a diverging run is stopped and reported, not warned about
            sums = model.backend.train(self.data, order, self.batch, first, last, model.step, model.lr_scale)
        model.step += last - first
        return np.asarray(sums, np.float64)

    def train_epoch(self, order, progress: Progress) -> tuple[np.ndarray, bool]:
        """The epoch's sums, and whether the loss went non-finite (then the rest is skipped)."""
        totals = np.zeros(len(self.model.program.result_names))
        chunk = self._chunk(progress, None)
        first = 0
        while first < self.batches:
            last = min(self.batches, first + chunk)
            t = time.perf_counter()
            totals += self._call(order, first, last)
            per_batch = (time.perf_counter() - t) / (last - first)
            progress.advance(last - first, self.model.program.results(totals, min(last * self.batch, self.n)))
            if self.terminate_on_nan and not math.isfinite(totals[0]):
                return totals, True
            chunk = self._chunk(progress, per_batch)
            first = last
        return totals, False

    def _chunk(self, progress: Progress, per_batch: float | None) -> int:
        """Batches in the next call: about CHUNK_SECONDS of work (a second when quiet), from the
        last call's time per batch (None before the first call)."""
        if per_batch is None:
            return max(1, -(-self.batches // (MIN_CHUNKS_PER_EPOCH * 5))) if progress.live else 1
        target = CHUNK_SECONDS if progress.live else QUIET_CHUNK_SECONDS
        limit = -(-self.batches // MIN_CHUNKS_PER_EPOCH) if progress.live else self.batches
        return max(1, min(int(target / max(per_batch, 1e-9)), limit))

    def locate(self, snapshot: Snapshot, order, epoch: int, kept_epoch: int) -> Divergence:
        """Replay the epoch from `snapshot` to find the first update that left the model non-finite."""
        model = self.model
        snapshot.restore(model)
        first, chunk = 0, REPLAY_CHUNK
        while first < self.batches:
            last = min(self.batches, first + chunk)
            start = Snapshot(model) if last - first > 1 else None
            what = _what_diverged(model, self._call(order, first, last))
            if what is None:
                first = last
            elif start is None:
                return Divergence(epoch + 1, first + 1, self.batches, model.step, what, kept_epoch)
            else:
                start.restore(model)
                chunk = 1
        # Training is deterministic, so the replay meets the same update; if not, say what is known.
        return Divergence(epoch + 1, self.batches, self.batches, snapshot.step + self.batches,
                          "the model stopped being finite", kept_epoch)

    def validate(self) -> dict[str, float]:
        if self.val_data is None:
            return {}
        program = self.model.program
        sums = self.model.backend.evaluate(self.val_data, self.batch)
        return {f"val_{k}": v for k, v in program.results(sums, self.val_n).items()}


def run(runner: EpochRunner, epochs: int, initial_epoch: int, shuffle: bool, callbacks,
        after_epoch=(), callback_states=None) -> History:
    """Epochs `initial_epoch`..`epochs - 1` (0-based, as Keras counts them in callbacks)."""
    model = runner.model
    callbacks = list(callbacks)
    check_hooks(callbacks)
    history = History()
    progress = Progress(epochs, runner.batches, runner.verbose)
    if not model.backend.compiled:     # its own step, so the first epoch's time is the training alone
        progress.compiled(model.warm_up())
    model.stop_training = False
    params = {"verbose": runner.verbose, "epochs": epochs, "steps": runner.batches}
    for callback in callbacks:
        callback.set_model(model)
        callback.set_params(params)
    logs = None
    for callback in callbacks:
        callback.on_train_begin()
    for callback, (state, arrays) in zip(callbacks, callback_states or ()):
        if state is not None:
            callback.set_state(state)
        if arrays and hasattr(callback, "set_arrays"):
            callback.set_arrays(arrays)
    snapshot = None
    try:
        for epoch in range(initial_epoch, epochs):
            for callback in callbacks:
                callback.on_epoch_begin(epoch)
            snapshot = Snapshot(model)
            order = (epoch_order(model.shuffle_seed, model.epochs_done, runner.n) if shuffle
                     else np.arange(runner.n, dtype=np.int64))
            progress.start_epoch(epoch + 1)
            start = time.perf_counter()
            sums, bad = runner.train_epoch(order, progress)
            train_seconds = time.perf_counter() - start
            if runner.terminate_on_nan and (bad or _what_diverged(model, sums) is not None):
                progress.close()
                history.diverged = runner.locate(snapshot, order, epoch, model.epochs_done)
                snapshot.restore(model)
                snapshot = None
                model.stop_training = True
                break
            logs = model.program.results(sums, runner.n)
            logs.update(runner.validate())
            seconds = time.perf_counter() - start
            record = {"epoch": epoch + 1, **logs, "seconds": seconds}
            # The epoch is finished: its record and count go in together, and an interrupt from here on keeps it.
            model.train_log.append(record)
            model.epochs_done += 1
            snapshot = None
            history.epochs.append(record)
            progress.end_epoch(epoch + 1, seconds, logs, runner.n / train_seconds if train_seconds > 0 else None)
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs)
            added = {k: v for k, v in logs.items() if k not in record}     # e.g. ReduceLROnPlateau's learning_rate
            if added:
                del record["seconds"]
                record.update(added, seconds=seconds)
            for hook in after_epoch:
                hook(model, epoch, logs)
            if model.stop_training:
                break
    except KeyboardInterrupt:
        progress.close()
        if snapshot is not None:        # half an epoch: back to the last finished one
            snapshot.restore(model)
        raise
    finally:
        progress.close()
    for callback in callbacks:
        callback.on_train_end(logs)
    return history
