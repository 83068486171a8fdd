"""The command line as one rank of a data-parallel job (`--ranks N`, or `mpiexec -n N modelc ...`).

`--ranks N` in a plain process starts the job (`modelc.launch`) with the same
command line; each rank then finds itself launched and runs the command. Rank
0 prints and writes; the others are silent (they hold the same model) except
for an error of their own. An error ends the whole job through MPI_Abort: a
rank that merely returned would leave the others waiting in the next
allreduce for ever. Most errors are every rank's (the same spec, the same
data), so a rank other than 0 waits `GRACE` seconds before it speaks: when
rank 0 has the same error it ends the job first and there is one message; when
the error is this rank's alone (its copy of the data is missing), it reports it,
naming itself.
"""
from __future__ import annotations

import os
import sys
import time

from modelc.errors import ModelcError

GRACE = 5.0     # longer than ranks drift apart on the way to the same error, even on a busy machine
AGREED = (0, 1, 130)    # outcomes every rank reaches at the same point: no abort needed


def add_flag(p) -> None:
    p.add_argument("--ranks", type=int, metavar="N", help="train as N processes with MPI (data-parallel; "
                   "the spec's batch stays the global batch); starts mpiexec itself")


def start_job(args) -> int | None:
    """With --ranks N in a plain process: run the job and return its exit code. Inside the job
    (or with --ranks 1, or none): None, and the command runs here."""
    from modelc.mpi_env import launched
    ranks = getattr(args, "ranks", None)
    _, size = launched()
    if ranks is None:
        return None
    if ranks < 1:
        raise ModelcError(f"--ranks {ranks}: the number of processes is 1 or more")
    if size > 1:
        if ranks != size:
            raise ModelcError(f"--ranks {ranks}, but the MPI launcher started {size} processes",
                              hint=f"leave --ranks out under mpiexec, or run mpiexec -n {ranks}")
        return None
    if ranks == 1:
        return None
    from modelc.launch import run_ranks
    return run_ranks(ranks, args.argv)


def say(text: str) -> None:
    """An error message from this process: named by rank within a job; from a rank other than 0,
    after the grace period (see the module's doc)."""
    from modelc.mpi_env import launched
    rank, size = launched()
    if size > 1:
        text = f"modelc: rank {rank} of {size}: " + (text[len("modelc: "):] if text.startswith("modelc: ") else text)
        if rank != 0:
            time.sleep(GRACE)
    print(text, file=_errors or sys.stderr, flush=True)


_errors = None      # the real stderr of a rank whose other output is silenced


def run_as_rank(main, argv) -> int:
    """Run `main(argv)` as this rank of the job; end the job on an error."""
    global _errors
    from modelc import launch
    from modelc.runtime import parallel
    try:
        group = parallel.world()
    except ModelcError as err:
        print(str(err), file=sys.stderr)
        return 2
    launch.register_rank(group.rank)
    if group.rank != 0:
        _errors = sys.stderr
        sys.stdout = sys.stderr = open(os.devnull, "w")
    code = main(argv)
    if code in AGREED:
        # Every rank ends here; none may go first: under `python -m mpi4py` a non-zero exit is an
        # MPI_Abort, which would cut rank 0 off while it still writes the outputs or a checkpoint.
        group.barrier()
        launch.rank_done(group.rank)
        return code
    launch.rank_error(group.rank, f"exit code {code}")
    sys.stdout.flush()
    group.abort(code)
    return code
