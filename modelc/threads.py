"""One thread budget for BLAS and Numba, so they never fight over the cores.

The generated training loop is serial and its matrix products are small (a
batch of 32 rows): measured on 2 shared cores, a threaded BLAS only adds
synchronisation and collapses when another process is busy. So by default
BLAS gets one thread and Numba one thread. MODELC_THREADS=N raises both
together for large layers.
"""
from __future__ import annotations

import os

_configured = None


def thread_count() -> int:
    value = os.environ.get("MODELC_THREADS", "1")
    try:
        return max(1, int(value))
    except ValueError:
        return 1


def configure_threads() -> int:
    """Limit BLAS (through threadpoolctl) and Numba to the same count; idempotent."""
    global _configured
    count = thread_count()
    if _configured == count:
        return count
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=count, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass
    try:
        import numba
        numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    except Exception:  # noqa: BLE001 - an unusual numba threading layer must not stop training
        pass
    _configured = count
    return count
