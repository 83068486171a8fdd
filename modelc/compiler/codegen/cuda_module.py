"""A plan's generated source as a Python module numba can compile kernels from.

`load_module` writes the source to `<modelc's cache folder>/cuda` under its hash
(see `modelc.files.cache_root`; `cache.py` heals a damaged entry) and imports it
once per process, so numba's on-disk cache (`cache=True`) finds the compiled
kernels again on the next run; `compiled_kernels` compiles (or loads) every kernel
of a plan; `kernel_signature` is the explicit numba signature of one kernel.
"""
from __future__ import annotations

from modelc.compiler.codegen import cache
from modelc.compiler.codegen.cuda_plan import Kernel, Plan


def _load(plan: Plan, ready):
    return cache.load("cuda", f"modelc_cuda_{plan.source_hash}", lambda: plan.module_source, ready, compare=True)


def load_module(plan: Plan):
    """The plan's source, imported from a file named by its hash."""
    return _load(plan, lambda module: module)


def compiled_kernels(plan: Plan) -> list:
    """numba.cuda dispatchers of the plan's kernels, in order, compiled or from numba's cache."""
    from numba import cuda
    return _load(plan, lambda module: [cuda.jit(kernel_signature(k), cache=True)(getattr(module, k.name))
                                       for k in plan.kernels])


def kernel_signature(kernel: Kernel):
    """The explicit numba signature of a kernel, from its parameters' IR types."""
    from numba import types
    names = {"f32[]": types.float32[::1], "i64[]": types.int64[::1], "f64[]": types.float64[::1],
             "i64": types.int64, "f32": types.float32}
    return types.void(*(names[p.type] for p in kernel.params))
