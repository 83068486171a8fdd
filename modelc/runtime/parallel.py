"""Data-parallel training on MPI: N processes train one model and get what one process gets.

Every rank holds the whole model and the whole data set, walks the same seeded
order of it, and takes its share of each global batch: rows [n*r/N, n*(r+1)/N)
of a batch of n. Per step, each rank runs the gradient phase of the training
graph (`compiler/phases.py`) on its rows, and packs its gradients, times its
share of the batch (rows / n), into one contiguous float32 buffer, followed by
its moving statistics (same weight), its loss and metric sums, and a stop flag.
One in-place `Allreduce` (sum) per step carries it all, as Horovod's tensor
fusion does: after it the buffer holds the gradient of the batch's mean loss,
the row-weighted mean of the statistics, the batch's sums and whether any rank
was interrupted. Every rank then runs the identical update phase. Results do
not depend on N beyond float32 rounding: the spec's batch is the global batch.

Batch normalization normalizes with each rank's own rows (per-rank statistics,
as Keras's BatchNormalization without `synchronized=True`); its moving
statistics are averaged over ranks every step, so the ranks stay identical.

With one process none of this runs: `Model` uses the whole-epoch compiled loop.
"""
from __future__ import annotations

import signal
import threading
import zlib
from contextlib import contextmanager

import numpy as np

from modelc.errors import ModelcError
from modelc.mpi_env import launched
from modelc.runtime.fitting import EpochRunner

PROGRESS_UPDATES = 50       # progress lines per epoch: chunks are the same on every rank


class Group:
    """The processes of a job, as the training loop needs them. One process: no messages."""
    rank, size = 0, 1

    def allreduce(self, buffer: np.ndarray) -> None:
        """Sum `buffer` over the ranks, in place."""

    def broadcast(self, buffer: np.ndarray) -> None:
        """Rank 0's `buffer` to every rank, in place."""

    def gather(self, value):
        """Every rank's `value`, in rank order, on every rank."""
        return [value]

    def barrier(self) -> None:
        """Wait until every rank is here."""

    def abort(self, code: int) -> None:
        """End every rank of the job now."""
        raise SystemExit(code)


class MpiGroup(Group):
    """The ranks of MPI_COMM_WORLD (mpi4py)."""

    def __init__(self, comm):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def allreduce(self, buffer):
        from mpi4py import MPI
        self.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)

    def broadcast(self, buffer):
        self.comm.Bcast(buffer, root=0)

    def gather(self, value):
        return self.comm.allgather(value)

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code):
        self.comm.Abort(code)


SOLO = Group()
_world: Group | None = None


def world() -> Group:
    """This process's job: SOLO unless a launcher started it as one of several ranks."""
    global _world
    if _world is None:
        rank, size = launched()
        if size <= 1:
            _world = SOLO
        else:
            try:
                from mpi4py import MPI
            except ImportError:
                raise ModelcError(f"this process is rank {rank} of {size} started by an MPI launcher, but "
                                  "mpi4py is not installed", hint="pip install 'modelc[mpi]'") from None
            _world = MpiGroup(MPI.COMM_WORLD)
    return _world


def share(rows: int, rank: int, size: int) -> tuple[int, int]:
    """The rows [lo, hi) of a global batch of `rows` that `rank` of `size` trains on."""
    return rows * rank // size, rows * (rank + 1) // size


# ---------------------------------------------------------------- agreeing before training

def check_same(group: Group, what: str, arrays) -> None:
    """A ModelcError on every rank when the ranks do not hold the same `arrays` (e.g. each
    machine read its own copy of the data, and one copy differs)."""
    digest = 0
    for array in arrays:
        digest = zlib.crc32(np.ascontiguousarray(array).view(np.uint8).reshape(-1), digest)
        digest = zlib.crc32(str(array.shape).encode(), digest)
    digests = group.gather(digest)
    differ = [r for r, d in enumerate(digests) if d != digests[0]]
    if differ:
        ranks = ", ".join(map(str, differ))
        raise ModelcError(f"{what} of rank{'s' if len(differ) > 1 else ''} {ranks} differs from rank 0's",
                          hint="every rank must read the same files (a shared folder, or identical copies)")


def broadcast_state(group: Group, model) -> None:
    """Rank 0's weights, optimizer state and counters to every rank, so all start identical."""
    params, state = model.backend.read_state()
    arrays = [params[k] for k in sorted(params)] + [state[k] for k in sorted(state)]
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, np.float32)
    flat = np.ascontiguousarray(flat, np.float32)
    group.broadcast(flat)
    counters = np.array([model.step, model.epochs_done, model.shuffle_seed, model.lr_scale], np.float64)
    group.broadcast(counters)
    at = 0
    for a in arrays:
        a[...] = flat[at:at + a.size].reshape(a.shape)
        at += a.size
    model.backend.load_state(params, state)
    model.step, model.epochs_done, model.shuffle_seed = (int(v) for v in counters[:3])
    model.lr_scale = float(counters[3])


# ---------------------------------------------------------------- interrupts, agreed on

class StopFlag:
    """Ctrl-C and SIGTERM while ranks train: noted, not raised, until the next step's
    allreduce tells every rank at once (raising on one rank mid-step would leave the
    others waiting in the allreduce forever). Hydra's mpiexec forwards Ctrl-C to every rank."""

    def __init__(self):
        self.raised = False

    def note(self, _signum, _frame) -> None:
        self.raised = True


@contextmanager
def deferred_interrupts(flag: StopFlag):
    if threading.current_thread() is not threading.main_thread():   # handlers belong to the main thread
        yield
        return
    previous = {s: signal.signal(s, flag.note) for s in (signal.SIGINT, signal.SIGTERM)}
    stopping = False
    try:
        yield
    except KeyboardInterrupt:       # the ranks agreed to stop: a signal that follows (a second
        stopping = True             # Ctrl-C, mpiexec's forward of the first) must not cut the save
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_IGN if stopping else handler)


# ---------------------------------------------------------------- the training loop

class ParallelRunner(EpochRunner):
    """`EpochRunner` with each step split around one allreduce."""

    def __init__(self, group: Group, model, data, n, val_data, val_n, batch, verbose, terminate_on_nan):
        from modelc.compiler.codegen import Backend
        if type(model.backend).gradient_step is Backend.gradient_step:
            raise ModelcError(f"data-parallel training runs on the cpu and numpy targets, not '{model.target}'",
                              hint="use --target cpu with --ranks or mpiexec")
        super().__init__(model, data, n, val_data, val_n, batch, verbose if group.rank == 0 else 0,
                         terminate_on_nan)
        self.group = group
        self.flag = StopFlag()
        self.exchange = exchange_size(model.program)
        self.results = len(model.program.result_names)
        self.buffer = np.zeros(self.exchange + self.results + 1, np.float32)

    def _call(self, order, first, last) -> np.ndarray:
        model, group, buffer, e = self.model, self.group, self.buffer, self.exchange
        backend = model.backend
        totals = np.zeros(self.results)
        for b in range(first, last):
            index = order[b * self.batch:(b + 1) * self.batch]
            lo, hi = share(len(index), group.rank, group.size)
            with np.errstate(all="ignore"):     # a diverging run is stopped and reported, not warned about
                # A rank with no rows (a batch smaller than the job) computes one row with weight 0.
                sums = backend.gradient_step(self.data, index[lo:max(hi, lo + 1)], lo, model.step)
                backend.pack(buffer[:e], (hi - lo) / len(index))
                buffer[e:e + self.results] = sums if hi > lo else 0.0
                buffer[-1] = 1.0 if self.flag.raised else 0.0
                group.allreduce(buffer)
                if buffer[-1] > 0:
                    raise KeyboardInterrupt
                backend.unpack(buffer[:e])
                backend.update_step(model.step, model.lr_scale)
            totals += buffer[e:e + self.results]
            model.step += 1
        return totals

    def _chunk(self, progress, per_batch):
        """The same number of batches per call on every rank: time-based chunks would differ, and
        a rank that stops at a chunk's end (a loss gone NaN) must stop at the others' step."""
        return max(1, self.batches // PROGRESS_UPDATES)

    def validate(self):
        if self.val_data is None:
            return {}
        program = self.model.program
        sums = evaluate_shared(self.group, self.model.backend, self.val_data, self.batch)
        return {f"val_{k}": v for k, v in program.results(sums, self.val_n).items()}


def exchange_size(program) -> int:
    """Elements of the values the phases of `program`'s training graph exchange (the buffer
    holds them, then the result sums and the stop flag)."""
    from modelc.compiler.phases import phases
    return sum(int(np.prod(v.shape, dtype=np.int64)) for v in phases(program.train).exchanged)


def evaluate_shared(group: Group, backend, data, batch: int) -> np.ndarray:
    """The sums of [loss, *metrics] over `data` (resident, the whole set on every rank), each
    rank evaluating a contiguous part: batches do not change an evaluation's sums."""
    x, y = data
    lo, hi = share(len(x), group.rank, group.size)
    sums = np.asarray(backend.evaluate((x[lo:hi], y[lo:hi]), batch), np.float64)
    group.allreduce(sums)
    return sums
