"""Data-parallel training on MPI gives what one process gives.

Each test starts a real MPI job on loopback (`mpiexec -n N python -m mpi4py ...`:
an exception on one rank aborts them all instead of hanging) and compares it
with the same training in this process. The cases the ranks run are in
`tests/parallel_cases.py`; the command line's jobs (`--ranks`, faults, Ctrl-C) are in
`tests/test_parallel_cli.py`.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import modelc
from modelc.compiler.build import build_program
from modelc.compiler.phases import phases
from modelc.grammar.parser import parse
from modelc.runtime import parallel
from modelc.runtime.seeding import epoch_order
from tests import parallel_cases as cases

HERE = Path(__file__).resolve().parent
MPIEXEC = Path(sys.executable).with_name("mpiexec")
needs_mpi = pytest.mark.skipif(not MPIEXEC.exists() or importlib.util.find_spec("mpi4py") is None,
                               reason="needs the mpi extra: pip install -e '.[mpi]'")
# The ranks sum each batch's rows in parts and then add the parts: float32 rounding differs in
# the last bits, and Adam's normalised step carries that on (near-zero gradients that cancel
# the most). 1e-4 after a dozen steps is far below any real mistake (a gradient divided by the
# rank's rows instead of the batch's, a dropout mask of the wrong rows: 1e-2 and more).
RTOL = 1e-4


def job(ranks: int, case: str, out: Path, *args, timeout: int = 180) -> subprocess.CompletedProcess:
    """Run `case` on `ranks` processes; an error (or a hang past `timeout`) fails the test."""
    command = [str(MPIEXEC), "-n", str(ranks), sys.executable, "-m", "mpi4py",
               str(HERE / "parallel_cases.py"), case, str(out), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def close(a, b, rtol=RTOL, atol=1e-7) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return bool(np.max(np.abs(a - b)) <= rtol * np.max(np.abs(a)) + atol) if a.size else True


def assert_same_training(result: Path, params, state, logs, evaluation) -> None:
    arrays = np.load(result / "result.npz")
    for name, value in params.items():
        assert close(value, arrays[f"p/{name}"]), name
    for name, value in state.items():
        assert close(value, arrays[f"s/{name}"]), name
    other = json.loads((result / "result.json").read_text())
    for key in ("loss", "val_loss"):
        assert other["logs"][key] == pytest.approx(logs[key], rel=RTOL)
    assert other["evaluation"]["loss"] == pytest.approx(evaluation["loss"], rel=RTOL)


# ---------------------------------------------------------------- without MPI

def test_shares_cover_every_row_once():
    for rows in (1, 2, 5, 16, 17):
        for size in (1, 2, 3, 4):
            parts = [parallel.share(rows, r, size) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 1


@pytest.mark.parametrize("spec", sorted(cases.SPECS))
def test_the_cut_is_before_the_optimizer(spec):
    graph = build_program(parse(cases.SPECS[spec], "<spec>")).train
    cut = phases(graph)
    later = graph.ops[cut.split:]
    assert later and all(op.prim in ("sum_squares", "add") or op.writes for op in later)
    assert not any(op.writes and op.prim != "moving_average" for op in graph.ops[:cut.split])
    assert len(cut.gradients) == sum(p.role == "param" for p in graph.params)
    assert [v.role for v in cut.statistics] == (["stat", "stat"] if spec == "batchnorm" else [])


def test_one_process_needs_no_mpi(monkeypatch):
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(parallel, "_world", None)
    assert parallel.world() is parallel.SOLO


# ---------------------------------------------------------------- MPI jobs

@needs_mpi
@pytest.mark.parametrize("target,ranks,n,batch", [
    ("cpu", 2, 101, 16),      # a short last batch of 5: shares of 2 and 3
    ("cpu", 3, 101, 16),      # uneven shares every step
    ("numpy", 2, 61, 12),
    ("cpu", 3, 20, 2),        # batches smaller than the job: a rank with no rows
])
def test_ranks_train_as_one_process(tmp_path, target, ranks, n, batch):
    job(ranks, "fit", tmp_path, "dropout", target, n, batch, 2)
    assert_same_training(tmp_path, *cases.train("dropout", target, n, batch, 2, parallel.SOLO))


@needs_mpi
def test_batch_normalization_uses_each_ranks_statistics(tmp_path):
    """One SGD step on 2 ranks is the mean of one step on each half of the batch alone: each
    rank normalizes its own rows and the moving statistics are averaged. That is not one
    process's step on the whole batch (statistics are per rank, not synchronised)."""
    job(2, "fit", tmp_path, "batchnorm", "cpu", 16, 16, 1)
    arrays = np.load(tmp_path / "result.npz")
    x, y = cases.data("batchnorm", 16)
    order = epoch_order(1, 0, 16)      # the job's one batch: the spec's seed's first shuffle
    halves = []
    for rows in (order[:8], order[8:]):
        model = modelc.compile(cases.SPECS["batchnorm"], "cpu", seed=1)
        model.group = parallel.SOLO
        model.fit(x[rows], y[rows], epochs=1, batch_size=8, shuffle=False, verbose=0)
        halves.append(model.backend.read_state()[0])
    whole = cases.train("batchnorm", "cpu", 16, 16, 1, parallel.SOLO)[0]
    for name in halves[0]:
        mean = (halves[0][name] + halves[1][name]) / 2
        assert close(mean, arrays[f"p/{name}"]), name
    assert not close(whole["conv2d.kernel"], arrays["p/conv2d.kernel"], rtol=1e-3)


@needs_mpi
def test_only_rank_0_writes(tmp_path):
    job(2, "writes", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.npz"]


@needs_mpi
def test_ranks_holding_different_data_refuse_to_train(tmp_path):
    job(2, "differs", tmp_path)
    for rank in (0, 1):
        message = (tmp_path / f"error{rank}.txt").read_text()
        assert "the training data of rank 1 differs from rank 0's" in message
