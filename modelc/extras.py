"""The optional extras: which feature needs which Python packages, and what a user without
them is told. `pyproject.toml` lists the same packages under [project.optional-dependencies]
(a test checks that the two agree)."""
from __future__ import annotations

import importlib.util

from modelc.errors import ModelcError

EXTRAS: dict[str, tuple[str, ...]] = {
    "keras": ("h5py",),                  # modelc from-keras reads the weights file with h5py
    "onnx": ("onnx", "onnxruntime"),     # modelc export builds with onnx; onnxruntime checks the result
    "plot": ("matplotlib",),             # modelc plot HISTORY, modelc train --plot
    "mpi": ("mpi4py",),                  # modelc train --ranks N, mpiexec -n N modelc train
}
# Distributions an extra installs that are programs and libraries, not Python modules: the
# MPICH wheel puts mpiexec beside python and libmpi where mpi4py finds it (doctor reports it).
PROGRAMS: dict[str, tuple[str, ...]] = {"mpi": ("mpich",)}


def _importable(name: str) -> bool:
    """Whether `import name` would find the package, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):       # a module blocked in sys.modules has no spec
        return False


def missing(extra: str) -> list[str]:
    """The packages of `extra` that cannot be imported here."""
    return [name for name in EXTRAS[extra] if not _importable(name)]


def require(extra: str, feature: str, packages: tuple[str, ...] | None = None) -> None:
    """A ModelcError naming what `feature` needs, unless `packages` (default: all of `extra`'s) import."""
    absent = [name for name in (packages or EXTRAS[extra]) if not _importable(name)]
    if absent:
        raise ModelcError(f"{feature} needs the Python package{'s' if len(absent) > 1 else ''} "
                          f"{', '.join(absent)}, which is not installed",
                          hint=f"pip install 'modelc[{extra}]'")
