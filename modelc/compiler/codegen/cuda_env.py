"""Where the cuda target's kernels run: a GPU, or Numba's CUDA simulator.

Whether kernels can run in this process and why not (`cuda_available`,
`driver_reason`), whether the simulator is on (`simulator_enabled`), and the two
adjustments that make the simulator give a GPU's answers quickly
(`prepare_simulator`, `SimulatorPace`), done only when it is on. numba is
imported inside the functions: importing this module needs neither numba nor a
GPU.
"""
from __future__ import annotations

import sys
import threading

import numpy as np


def simulator_enabled() -> bool:
    """NUMBA_ENABLE_CUDASIM as numba read it when it was first imported."""
    try:
        from numba.core import config
    except ImportError:
        return False
    return bool(config.ENABLE_CUDASIM)


def driver_reason() -> str:
    """Why the driver did not come up, in numba-cuda's own words."""
    try:
        from numba.cuda.cudadrv.driver import driver
        err = getattr(driver, "initialization_error", None)
        if err:
            return " ".join(str(err).split())
    except Exception as exc:    # the driver module itself failing is the reason
        return " ".join(str(exc).split()) or type(exc).__name__
    return "no CUDA device was found"


def cuda_available() -> tuple[bool, str]:
    """(True, how) when kernels can run: a GPU with its driver, or the simulator."""
    try:
        import numba  # noqa: F401
        from numba import cuda
    except ImportError as exc:
        return False, f"numba-cuda is not installed ({exc})"
    if simulator_enabled():
        return True, "the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1)"
    try:
        if not cuda.is_available():
            return False, driver_reason()
        gpus = list(cuda.gpus)
    except Exception as exc:
        return False, " ".join(str(exc).split()) or type(exc).__name__
    if not gpus:
        return False, "the CUDA driver found no GPU"
    return True, f"{len(gpus)} device(s)"


_SIM_READY = False


def prepare_simulator() -> None:
    """Make Numba's CUDA simulator (numba-cuda 0.30) give a GPU's answers, reliably.

    Its `cuda.shared.array` allocates a block's array on first use with an
    unlocked get-then-set keyed by the calling line, so two threads of a block
    can race and get different arrays (a real GPU shares one): a rare, random
    wrong result. The same logic under a lock. Only ever done with the
    simulator switched on, which users do for testing."""
    global _SIM_READY
    if _SIM_READY or not simulator_enabled():
        return
    from numba.core import types as nbtypes
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support
    lock = threading.Lock()
    original = kernelapi.FakeCUDAShared.array

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:
            return original(self, shape, dtype, alignment)
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        if isinstance(dtype, nbtypes.Type):
            dtype = numpy_support.as_dtype(dtype)
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                res = np.empty(shape, dtype)
                self._allocations[caller] = res
        return res

    kernelapi.FakeCUDAShared.array = array
    _SIM_READY = True


class SimulatorPace:
    """While kernels run in the simulator, a short GIL switch interval: its block
    manager busy-polls Python threads, and at the default 5 ms each barrier costs
    a time slice (3-5x slower). Restored afterwards; a no-op on a GPU."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        if self.on:
            self.saved = sys.getswitchinterval()
            sys.setswitchinterval(1e-5)

    def __exit__(self, *exc):
        if self.on:
            sys.setswitchinterval(self.saved)
