"""Whether a run fits in memory, checked before anything is allocated.

The estimate is conservative, not exact: the parameters and optimizer state
(and the float64 draw of the largest parameter while the weights are made),
every unbatched value of the largest graph the model has (gradients, sums),
and every batched value of it (activations, their gradients, the batch's
inputs and targets) times the batch, as if none shared memory (the cpu and
cuda targets reuse buffers, so they need less; a reshape is a view and
counts nothing). It is compared with the machine's physical memory (numpy,
cpu) or the GPU's (cuda, when the driver answers; under the simulator and
without a GPU the check is skipped).
"""
from __future__ import annotations

from modelc.arrays import gib, machine_memory
from modelc.compiler.ir import I64
from modelc.errors import ModelcError


def _bytes(value) -> int:
    return (8 if value.dtype == I64 else 4) * value.sample_size()


def _costs(program) -> tuple[int, int]:
    """(bytes that do not depend on the batch, bytes per sample) of the largest graph."""
    weights = sum(_bytes(p.value) for p in program.params) + sum(_bytes(s) for s in program.state)
    # the weights are drawn in float64, one tensor at a time, then cast: the largest one twice over
    weights += 2 * max((_bytes(p.value) for p in program.params), default=0)
    fixed = per_sample = 0
    for graph in (program.train, program.evaluate, program.predict):
        if graph is None:
            continue
        views = {op.out.id for op in graph.ops if op.prim == "reshape"}
        values = {v.id: v for v in graph.values() if v.role not in ("param", "stat", "state") and v.id not in views}
        batched = sum(_bytes(v) for v in values.values() if v.batched)
        unbatched = sum(_bytes(v) for v in values.values() if not v.batched)
        if (batched, unbatched) > (per_sample, fixed):
            per_sample, fixed = batched, unbatched
    return weights + fixed, per_sample


def needed_bytes(program, batch: int, target: str) -> int:
    """About how many bytes a run of `program` on `target` with batches of `batch` rows needs
    (the same estimate on every target: an upper bound of what each allocates)."""
    fixed, per_sample = _costs(program)
    return fixed + per_sample * int(batch)


def available_bytes(target: str) -> int | None:
    """The memory a run on `target` can use, or None when it cannot be found out cheaply."""
    if target == "cuda":
        return _gpu_bytes()
    return machine_memory()


def _gpu_bytes() -> int | None:
    from modelc.compiler.codegen.cuda_env import simulator_enabled
    if simulator_enabled():
        return None
    try:
        from numba import cuda
        if not cuda.is_available():
            return None
        return int(cuda.current_context().get_memory_info().total)
    except Exception:       # no driver, no device, a driver that will not say: no check
        return None


def check_fits(program, batch: int, target: str, what: str) -> None:
    """A ModelcError, with the largest batch that fits, when `what` ("training", ...) of
    `program` with batches of `batch` rows would need more memory than `target` has."""
    available = available_bytes(target)
    needed = needed_bytes(program, batch, target)
    if available is None or needed <= available:
        return
    fixed, per_sample = _costs(program)
    where = "the GPU has" if target == "cuda" else "this machine has"
    fits = (available - fixed) // per_sample if per_sample else 0
    hint = (f"use a smaller batch: at most {fits} fits" if fits >= 1 else
            "the weights alone do not fit: make the model smaller (fewer or narrower layers)")
    raise ModelcError(f"{what} '{program.name}' with batches of {batch} needs about {gib(needed)} of "
                      f"memory on the {target} target, more than the {gib(available)} {where}", hint=hint)
