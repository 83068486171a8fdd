"""A plan's generated source as a Python module numba can compile kernels from.

`load_module` writes the source to `<modelc's cache folder>/cuda` under its hash
(see `modelc.files.cache_root`) and imports it once per process, so numba's
on-disk cache (`cache=True`) finds the compiled kernels again on the next run;
`kernel_signature` is the explicit numba signature of one kernel.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from modelc.compiler.codegen.cuda_plan import Kernel, Plan
from modelc.errors import ModelcError
from modelc.files import atomic_write, cache_root

_MODULES: dict[str, object] = {}


def _cache_dir() -> Path:
    path = cache_root() / "cuda"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_module(plan: Plan):
    """Import the plan's source from a file named by its hash, so numba's on-disk
    cache (cache=True) can find it again on the next run."""
    key = plan.source_hash
    if key in _MODULES:
        return _MODULES[key]
    try:
        path = _cache_dir() / f"modelc_cuda_{key}.py"
        if not path.exists() or path.read_text() != plan.module_source:
            atomic_write(path, plan.module_source.encode(), make_folder=True)
    except OSError as err:
        raise ModelcError(f"cannot write the generated kernels to the cache folder: {err}",
                          hint="set MODELC_CACHE_DIR to a writable folder") from None
    name = f"modelc_cuda_{key}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    _MODULES[key] = module
    return module


def kernel_signature(kernel: Kernel):
    """The explicit numba signature of a kernel, from its parameters' IR types."""
    from numba import types
    names = {"f32[]": types.float32[::1], "i64[]": types.int64[::1], "f64[]": types.float64[::1],
             "i64": types.int64, "f32": types.float32}
    return types.void(*(names[p.type] for p in kernel.params))
