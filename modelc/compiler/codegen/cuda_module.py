"""A plan's generated source as a Python module numba can compile kernels from.

`load_module` writes the source to `<modelc's cache folder>/cuda` under its hash
(see `modelc.files.cache_root`; `cache.py` heals a damaged entry) and imports it
once per process, so numba's on-disk cache (`cache=True`) finds the compiled
kernels again on the next run; `compiled_kernels` compiles (or loads) every kernel
of a plan, `compiled_epoch` its epoch kernel; `kernel_signature` is the explicit numba
signature of one kernel.
"""
from __future__ import annotations

import hashlib

from modelc.compiler.codegen import cache
from modelc.compiler.codegen.cuda_epoch import EPOCH_NAME, Epoch
from modelc.compiler.codegen.cuda_plan import KParam, Kernel, Plan


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


def _load_epoch(plan: Plan, epoch: Epoch, ready):
    source = plan.module_source + "\n\n" + epoch.source
    name = f"modelc_cuda_epoch_{hashlib.sha256(source.encode()).hexdigest()[:20]}"
    return cache.load("cuda", name, lambda: source, ready, compare=True)


def epoch_function(plan: Plan, epoch: Epoch):
    """The Python function of a plan's epoch kernel (`cuda_epoch`): the plan's module with the
    epoch kernel after it, cached by its own hash."""
    return _load_epoch(plan, epoch, lambda module: getattr(module, EPOCH_NAME))


def compiled_epoch(plan: Plan, epoch: Epoch):
    """The numba.cuda dispatcher of a plan's epoch kernel, compiled or from numba's cache."""
    from numba import cuda
    return _load_epoch(plan, epoch, lambda module: cuda.jit(signature(epoch.params), cache=True)(
        getattr(module, EPOCH_NAME)))


def kernel_signature(kernel: Kernel):
    """The explicit numba signature of a kernel, from its parameters' IR types."""
    return signature(kernel.params)


def signature(params: list[KParam]):
    """The numba signature of a kernel taking `params`."""
    from numba import types
    names = {"f32[]": types.float32[::1], "i64[]": types.int64[::1], "f64[]": types.float64[::1],
             "i64": types.int64, "f32": types.float32}
    return types.void(*(names[p.type] for p in params))
