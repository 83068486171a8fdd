"""The launcher behind `--ranks N`: the command line each MPI gets, the MPI it finds, what doctor
says, and real 2-rank jobs of a small stub program (not modelc, so each takes about a second):
a clean run, a rank killed outright, a rank that reports its own error, SIGTERM, and an mpiexec
that never ends the job. Every job runs in its own session with a deadline, so a hang fails
the test instead of the run."""
from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from modelc import launch
from modelc.errors import ModelcError
from modelc.launch import Mpiexec

ROOT = Path(__file__).resolve().parent.parent
HYDRA = Mpiexec("/opt/mpich/bin/mpiexec", "mpich", "5.0.2")
OPEN_MPI = Mpiexec("/opt/openmpi/bin/mpiexec", "openmpi", "5.0.3")
RANK = [sys.executable, "-m", "mpi4py", "-m", "modelc.entry"]
needs_mpi = pytest.mark.skipif(launch.find_mpiexec() is None or launch._mpi4py() is None,
                               reason="no mpiexec or mpi4py here (the mpi extra brings both)")


@pytest.fixture
def machine(monkeypatch):
    """Eight cores, not root, MODELC_THREADS unset; a test changes what it needs."""
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("MODELC_THREADS", raising=False)
    return monkeypatch


def test_mpich_gets_the_ranks_and_a_share_of_the_cores(machine):
    machine.setattr(os, "geteuid", lambda: 0)           # hydra runs as root unasked
    assert launch.command(2, ["train", "a.model"], HYDRA) == (
        [HYDRA.path, "-n", "2", *RANK, "train", "a.model"], {"MODELC_THREADS": "4"})
    assert launch.command(16, [], HYDRA) == ([HYDRA.path, "-n", "16", *RANK], {"MODELC_THREADS": "1"})


def test_open_mpi_oversubscribes_only_beyond_the_cores(machine):
    assert launch.command(8, ["train", "a.model"], OPEN_MPI)[0] == [OPEN_MPI.path, "-n", "8", *RANK, "train", "a.model"]
    assert launch.command(9, ["train"], OPEN_MPI)[0] == [OPEN_MPI.path, "-n", "9", "--oversubscribe", *RANK, "train"]


def test_open_mpi_runs_as_root_only_for_root(machine):
    assert launch.command(2, [], OPEN_MPI)[1] == {"MODELC_THREADS": "4"}
    machine.setattr(os, "geteuid", lambda: 0)
    assert launch.command(2, [], OPEN_MPI)[1] == {"MODELC_THREADS": "4", "OMPI_ALLOW_RUN_AS_ROOT": "1",
                                                  "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def test_the_users_thread_count_stands_and_a_program_replaces_modelc(machine):
    machine.setenv("MODELC_THREADS", "3")
    assert launch.command(2, ["x"], HYDRA, program=["prog"]) == ([HYDRA.path, "-n", "2", "prog", "x"], {})


@pytest.mark.parametrize("says, kind, version", [
    ("HYDRA build details:\n    Version:                                 4.2.1\n", "mpich", "4.2.1"),
    ("mpiexec (Open MPI) 5.0.3\n\nReport bugs to https://www.open-mpi.org/community/help/\n", "openmpi", "5.0.3"),
    ("mpirun (Open MPI) 4.1.2\n", "openmpi", "4.1.2"),
    ("Intel(R) MPI Library for Linux* OS, Version 2021.10 Build 20230619\n", "other", "2021.10"),
])
def test_the_mpiexec_beside_python_comes_first(tmp_path, monkeypatch, says, kind, version):
    fake = tmp_path / "mpiexec"
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{says}EOF\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert launch.find_mpiexec() == Mpiexec(str(fake), kind, version)


@needs_mpi
def test_the_venv_has_mpich_and_doctor_says_so():
    import importlib.metadata
    found = launch.find_mpiexec()
    assert found.kind == "mpich" and found.version[0].isdigit()
    assert launch.mpi_report() == f"MPICH {found.version} (mpiexec at {found.path}); " \
                                  f"mpi4py {importlib.metadata.version('mpi4py')}"


def test_doctor_without_mpi(monkeypatch):
    monkeypatch.setattr(launch, "find_mpiexec", lambda: None)
    monkeypatch.setattr(launch, "_mpi4py", lambda: None)
    assert launch.mpi_report() == "not found: pip install 'modelc[mpi]' (needed for --ranks and mpiexec)"
    monkeypatch.setattr(launch, "_mpi4py", lambda: "4.1.2")
    assert launch.mpi_report() == "mpiexec not found: pip install 'modelc[mpi]'; mpi4py 4.1.2"


def test_no_mpiexec_or_no_mpi4py_is_a_message(monkeypatch):
    monkeypatch.setattr(launch, "find_mpiexec", lambda: None)
    with pytest.raises(ModelcError) as err:
        launch.run_ranks(2, ["train", "a.model"])
    assert str(err.value) == ("error: --ranks 2 needs an MPI launcher (mpiexec), and none was found\n"
                              "  hint: pip install 'modelc[mpi]'")
    monkeypatch.setattr(launch, "find_mpiexec", lambda: HYDRA)
    monkeypatch.setattr(launch, "_mpi4py", lambda: None)
    with pytest.raises(ModelcError, match="--ranks 3 needs the Python package mpi4py, which is not installed"):
        launch.run_ranks(3, ["train", "a.model"])


def test_a_rank_reports_to_the_launchers_folder_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(launch.REPORTS, raising=False)
    launch.register_rank(0)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv(launch.REPORTS, str(tmp_path / "gone"))     # a rank on another machine
    launch.rank_error(0, "boom")
    monkeypatch.setenv(launch.REPORTS, str(tmp_path))
    launch.register_rank(3)
    launch.rank_done(3)
    launch.rank_error(1, "exit code 2")
    assert (tmp_path / "3.pid").read_text().split() == [str(os.getpid()), socket.gethostname()]
    assert (tmp_path / "3.done").read_text() == "" and (tmp_path / "1.error").read_text() == "exit code 2"


def test_the_relay_passes_the_ranks_output_as_it_comes_and_keeps_mpichs_notices(tmp_path):
    job, out = launch._Job(tmp_path, 2), io.StringIO()
    read, write = os.pipe()
    relay = threading.Thread(target=job.relay, args=(os.fdopen(read, "rb"), out))
    relay.start()
    os.write(write, b"Model: \"m\"\n" + b"=" * 30 + b"\n  dense  (None, 3)\n" + b"=" * 30 + b"\n\rEpoch 1/2 3/9")
    deadline = time.time() + 5
    while not out.getvalue().endswith("3/9") and time.time() < deadline:    # a bar needs no newline
        time.sleep(0.01)
    assert out.getvalue().endswith("\rEpoch 1/2 3/9")
    os.write(write, b"\n\n" + b"=" * 83 + b"\n=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES\n"
             b"=   PID 4242 RUNNING AT vm\n=   EXIT CODE: 9\n=   CLEANING UP REMAINING PROCESSES\n" + b"=" * 83 +
             b"\nYOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed (signal 9)\n"
             b"This typically refers to a problem with your application.\n"
             b"Please see the FAQ page for debugging suggestions\n"
             b"Abort(2) on node 1 (rank 1 in comm 0): application called MPI_Abort(MPI_COMM_WORLD, 2) - process 1\n"
             + "après\n".encode()[:4])
    os.write(write, "après\n".encode()[4:])         # a character split between two reads
    os.close(write)
    relay.join(5)
    assert out.getvalue() == f"Model: \"m\"\n{'=' * 30}\n  dense  (None, 3)\n{'=' * 30}\n\rEpoch 1/2 3/9\napr\u00e8s\n"
    assert job.reported == 4242


def test_open_mpi_reports_a_signal_as_128_plus_it(tmp_path):
    job = launch._Job(tmp_path, 3)
    job.pids, job.died = {0: 100, 1: 101, 2: 102}, [2]
    message, code = launch._outcome(137, job, OPEN_MPI, interrupted=False, forced=False)
    assert code == 1 and message.startswith("error: rank 2 of 3 (pid 102) ended without a message (mpiexec "
                                            "reports exit code 137: killed by signal 9, SIGKILL)")


STUB = """\
import os, signal, sys, time
import numpy as np
from mpi4py import MPI
from modelc import launch
world, mode, buf, stop = MPI.COMM_WORLD, sys.argv[1], np.zeros(1), []
launch.register_rank(world.rank)
signal.signal(signal.SIGINT, lambda *_: stop.append(1))
world.Barrier()
if world.rank == 0:
    print("=" * 20 + "\\n  rank 0 output\\n" + "=" * 20, flush=True)
    open(sys.argv[2], "w").close()
if mode in ("kill", "stuck") and world.rank == 1:
    time.sleep(0.5)                         # dies while the launcher watches it, as in training
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "error" and world.rank == 1:
    print("stub: rank 1 of 2: error: no data", file=sys.stderr, flush=True)
    launch.rank_error(1, "exit code 2")
    world.Abort(2)
for step in range(20 if mode == "clean" else 10 ** 9):
    buf[0] = float(bool(stop))
    world.Allreduce(MPI.IN_PLACE, buf)      # rank 0 waits here for a rank that is gone
    if buf[0]:
        launch.rank_done(world.rank)
        sys.exit(130)
    time.sleep(0.002)
launch.rank_done(world.rank)
"""
LAUNCHER = """\
import sys
from modelc import launch
stub, mode, ready = sys.argv[1:]
launch.GRACE, launch.KILL_AFTER = 1.0, 1.0
hydra = ["-disable-auto-cleanup"] if mode == "stuck" else []      # MPICH then leaves rank 0 waiting
sys.exit(launch.run_ranks(2, [mode, ready], program=hydra + [sys.executable, "-m", "mpi4py", stub]))
"""


def _job(tmp_path: Path, mode: str, stop_with: int | None = None, within: float = 30.0):
    """Run the stub as a 2-rank job through run_ranks; (exit code, stdout, stderr, seconds)."""
    (tmp_path / "stub.py").write_text(STUB)
    ready = tmp_path / "ready"
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(tmp_path / "stub.py"), mode, str(ready)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)
    try:
        if stop_with is not None:
            while not ready.exists() and time.time() - start < within:
                time.sleep(0.05)
            proc.send_signal(stop_with)
        out, err = proc.communicate(timeout=max(1.0, within - (time.time() - start)))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the job did not end within {within:.0f} s")
    return proc.returncode, out, err, time.time() - start


@needs_mpi
def test_a_clean_job_returns_0_and_the_ranks_output(tmp_path):
    code, out, err, _ = _job(tmp_path, "clean")
    assert (code, out, err) == (0, "=" * 20 + "\n  rank 0 output\n" + "=" * 20 + "\n", "")


@needs_mpi
def test_a_killed_rank_is_named_once(tmp_path):
    code, out, err, seconds = _job(tmp_path, "kill")
    assert code == 1 and seconds < 30
    assert err.count("modelc: error: rank 1 of 2 (pid ") == 1, err
    assert "ended without a message (mpiexec reports exit code 9: killed by signal 9, SIGKILL)" in err
    assert "\n  hint: " in err
    assert "BAD TERMINATION" not in out + err and "YOUR APPLICATION" not in out + err


@needs_mpi
def test_a_rank_that_reports_its_error_is_not_reported_again(tmp_path):
    code, out, err, _ = _job(tmp_path, "error")
    assert code == 2
    assert err == "stub: rank 1 of 2: error: no data\n", err      # MPICH's Abort line kept back


@needs_mpi
def test_sigterm_stops_the_job_as_ctrl_c_does(tmp_path):
    code, _, err, _ = _job(tmp_path, "signal", stop_with=signal.SIGTERM)
    assert code == 130, err
    assert "ended without a message" not in err


@needs_mpi
def test_a_job_mpiexec_does_not_end_is_stopped(tmp_path):
    code, _, err, seconds = _job(tmp_path, "stuck", within=20)
    assert code == 1 and seconds < 20
    # without MPICH's notice naming the pid, a loaded machine may see both ranks gone at one look
    assert len(re.findall(r"^modelc: error: rank (1|0 or 1) of 2 \(pids? ", err, re.M)) == 1, err
