"""Whether this process is one rank of an MPI job, read from what the launcher put in its
environment: cheap, so a plain run never loads an MPI library (one process is the fast path).

Launchers name the rank and the job's size differently: MPICH's hydra sets PMI_RANK and
PMI_SIZE, Open MPI sets OMPI_COMM_WORLD_RANK and OMPI_COMM_WORLD_SIZE, and Slurm's srun
sets SLURM_PROCID and SLURM_STEP_NUM_TASKS (only inside a job step, so a shell inside an
allocation is still one process).
"""
from __future__ import annotations

import os

PAIRS = (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE"),
         ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS"))


def launched() -> tuple[int, int]:
    """(rank, size) as the launcher set them; (0, 1) when no launcher started this process."""
    for rank_var, size_var in PAIRS:
        rank, size = os.environ.get(rank_var), os.environ.get(size_var)
        if rank is not None and size is not None:
            try:
                return int(rank), int(size)
            except ValueError:
                continue
    return 0, 1


def first_rank() -> bool:
    """Whether this process writes the run's outputs and prints its progress (rank 0 does)."""
    return launched()[0] == 0
