"""`--ranks` on the command line: the job gives one process's result, prints once, and ends
cleanly when a rank dies, cannot read its data, or is interrupted. Every test here runs a
real MPI job on loopback, with a deadline, so a hang fails the test instead of the run."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from modelc import cli
from tests.test_parallel import MPIEXEC, close, needs_mpi

ROOT = Path(__file__).resolve().parent.parent
MODELC = [sys.executable, "-m", "modelc.entry"]

SPEC = """\
model ranks
input  point: f32[4]
target blob: int[] classes 3
network {
    point -> dense(16, relu) -> dropout(0.25) -> dense(3, softmax) => probs
}
loss      sparse_categorical_crossentropy(blob, probs)
optimizer adam(lr=0.01)
metrics   accuracy
train {
    data     DATA
    batch    24
    epochs   EPOCHS
    seed     0
    validate split(0.2)
}
"""
BLOBS = "blobs(samples=500, centers=3, features=4, std=2.0, seed=4)"

pytestmark = needs_mpi


def write_spec(folder: Path, epochs: int = 3, data: str = BLOBS) -> Path:
    path = folder / "ranks.model"
    path.write_text(SPEC.replace("DATA", data).replace("EPOCHS", str(epochs)))
    return path


def run(args, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(MODELC + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, **kw)


def test_train_on_two_ranks_matches_one_process(tmp_path):
    spec = write_spec(tmp_path)
    job = run(["train", spec, "--ranks", 2, "--out", tmp_path / "w2.npz", "--history", tmp_path / "h2.json"])
    assert job.returncode == 0, job.stderr
    assert len(re.findall(r"^Epoch 3/3", job.stdout, re.M)) == 1, job.stdout     # rank 0 alone prints
    assert "rank 1" not in job.stdout + job.stderr
    assert cli.main(["train", str(spec), "--quiet", "--out", str(tmp_path / "w1.npz")]) == 0
    one, two = np.load(tmp_path / "w1.npz"), np.load(tmp_path / "w2.npz")
    weights = [k for k in one.files if k.startswith("param/")]
    assert weights and all(close(one[k], two[k]) for k in weights)
    assert (tmp_path / "h2.json").exists()


def test_verify_two_ranks_against_one_process():
    job = run(["verify", "specs/mnist.model", "--ranks", 2, "--steps", 20], timeout=300)
    assert job.returncode == 0, job.stdout + job.stderr
    assert "verify: ok: 2 ranks matches 1 process" in job.stdout
    assert job.stdout.count("verify specs/mnist.model") == 1


def test_ranks_must_agree_with_the_launcher(tmp_path):
    spec = write_spec(tmp_path)
    job = subprocess.run([str(MPIEXEC), "-n", "2", *MODELC, "train", str(spec), "--ranks", "3"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert job.returncode != 0
    assert job.stderr.count("--ranks 3, but the MPI launcher started 2 processes") == 1, job.stderr


def _rank_pid(marker: str, rank: int, deadline: float) -> int:
    """The pid of `rank` of the job whose environment carries `marker`."""
    while time.time() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"MODELC_TEST_JOB={marker}".encode() in env and f"PMI_RANK={rank}".encode() in env:
                return int(entry.name)
        time.sleep(0.2)
    raise AssertionError(f"rank {rank} never started")


def _started(marker: str, args, folder: Path):
    env = {**os.environ, "MODELC_TEST_JOB": marker}
    return subprocess.Popen(MODELC + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=folder, env=env, start_new_session=True)


def test_a_killed_rank_ends_the_job_with_a_message(tmp_path):
    marker = uuid.uuid4().hex
    spec = write_spec(tmp_path, epochs=100000)
    job = _started(marker, ["train", spec, "--ranks", 2, "--quiet"], tmp_path)
    try:
        victim = _rank_pid(marker, 1, time.time() + 60)
        time.sleep(3)                   # well into training
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        out, err = job.communicate(timeout=30)
        assert time.time() - killed < 30
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode not in (0, None)
    assert "rank 1 of 2" in err, err


def test_a_rank_that_cannot_read_its_data_ends_the_job(tmp_path):
    """Rank 1's machine lacks the data file: it says so, naming itself, and the job ends."""
    folders = [tmp_path / "a", tmp_path / "b"]
    x = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    for folder in folders:
        folder.mkdir()
        write_spec(folder, data='npz(path="data.npz")')
    np.savez(folders[0] / "data.npz", x=x, y=np.arange(60) % 3)
    command = [str(MPIEXEC)]
    for rank, folder in enumerate(folders):
        command += (([":"] if rank else []) + ["-n", "1", *MODELC, "train", str(folder / "ranks.model")])
    start = time.time()
    job = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert time.time() - start < 30
    assert job.returncode != 0
    assert job.stderr.count("modelc: rank 1 of 2: ") == 1, job.stderr
    assert "data.npz' not found" in job.stderr


def test_ctrl_c_keeps_the_checkpoint_one_process_would(tmp_path):
    marker = uuid.uuid4().hex
    spec = write_spec(tmp_path, epochs=100000)
    folder = tmp_path / "ck"
    job = _started(marker, ["train", spec, "--ranks", 2, "--quiet", "--checkpoint", folder], tmp_path)
    try:
        deadline = time.time() + 90
        while not (folder / "last.npz").exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        os.killpg(job.pid, signal.SIGINT)       # what a terminal's Ctrl-C does
        out, err = job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 130, err
    epochs = int(re.search(r"epoch (\d+) was the last to finish", err).group(1))
    assert err.count("resume with: modelc train") == 1
    assert cli.main(["train", str(spec), "--quiet", "--epochs", str(epochs), "--out", str(tmp_path / "one.npz")]) == 0
    one, kept = np.load(tmp_path / "one.npz"), np.load(folder / "last.npz")
    weights = [k for k in one.files if k.startswith("param/")]
    assert weights and all(close(one[k], kept[k]) for k in weights)
