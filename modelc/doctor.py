"""`modelc doctor`: what the cuda target can find on this machine, and which optional extras.

A GPU run needs four things that fail in different ways: numba-cuda, the CUDA
compiler libraries (NVVM and libdevice to make PTX, nvJitLink to link it), the
driver, and a device. The report names each, with versions and paths, so a
user without a GPU learns why in one screen instead of a traceback.
"""
from __future__ import annotations

import importlib.metadata
import platform
import sys
import time

from modelc.compiler.codegen.cuda_env import cuda_available, driver_reason, simulator_enabled


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _devices() -> list[str]:
    from numba import cuda
    lines = []
    for gpu in cuda.gpus:
        with gpu:
            dev = cuda.get_current_device()
            major, minor = dev.compute_capability
            name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
            lines.append(f"#{dev.id} {name}, compute capability {major}.{minor} (sm_{major}{minor})")
    return lines


def _libraries() -> list[tuple[str, str]]:
    """NVVM, libdevice and friends as numba-cuda finds them, and nvJitLink via cuda-pathfinder."""
    found: list[tuple[str, str]] = []
    try:
        from numba.cuda.cuda_paths import get_cuda_paths
        for key, entry in get_cuda_paths().items():
            if key in ("nvvm", "libdevice", "nvrtc", "cudalib_dir"):
                info = getattr(entry, "info", None)
                by = getattr(entry, "by", "")
                found.append((key, f"{info} ({by})" if info else "not found"))
    except Exception as exc:
        found.append(("nvvm/libdevice", f"lookup failed: {exc}"))
    try:
        from cuda import pathfinder
        try:
            lib = pathfinder.load_nvidia_dynamic_lib("nvJitLink")
            found.append(("nvJitLink", f"{lib.abs_path} ({getattr(lib, 'found_via', '')})"))
        except Exception as exc:
            found.append(("nvJitLink", f"not found ({type(exc).__name__})"))
    except ImportError:
        found.append(("nvJitLink", "not checked (cuda-pathfinder is not installed)"))
    return found


def ptx_check(arch: tuple[int, int] = (8, 0)) -> tuple[bool, str]:
    """Compile a one-line kernel to PTX: proves NVVM and libdevice work here."""
    if simulator_enabled():
        return False, "skipped: the simulator is on (run doctor without NUMBA_ENABLE_CUDASIM)"
    try:
        from numba import cuda, float32, void
    except ImportError as exc:
        return False, f"numba-cuda is not installed ({exc})"

    def probe(a):
        i = cuda.grid(1)
        if i < a.size:
            a[i] = a[i] * float32(2.0)

    start = time.perf_counter()
    try:
        ptx, _ = cuda.compile_ptx(probe, void(float32[::1]), cc=arch)
    except Exception as exc:
        return False, f"failed: {' '.join(str(exc).split())[:300]}"
    target = f"sm_{arch[0]}{arch[1]}"
    if ".visible .entry" not in ptx or f".target {target}" not in ptx:
        return False, "failed: the compiler returned no kernel entry"
    return True, f"ok ({target} test kernel in {time.perf_counter() - start:.2f} s)"


def _extras() -> list[tuple[str, str]]:
    """Each optional extra: its packages' versions, or how to install them."""
    from modelc.extras import EXTRAS, PROGRAMS, missing
    rows = []
    for extra, packages in EXTRAS.items():
        programs = PROGRAMS.get(extra, ())
        absent = missing(extra) + [name for name in programs if _version(name) is None]
        found = ", ".join(f"{name} {_version(name)}" for name in packages + programs if name not in absent)
        rows.append((f"[{extra}]", found if not absent else
                     (found + "; " if found else "") + f"missing {', '.join(absent)}: pip install 'modelc[{extra}]'"))
    from modelc.launch import mpi_report
    rows.append(("MPI", mpi_report()))
    import shutil
    dot = shutil.which("dot")
    rows.append(("graphviz", f"dot at {dot} (modelc plot to .svg/.png/.pdf)" if dot else
                 "dot not found: modelc plot writes .dot only (apt install graphviz)"))
    return rows


def report() -> str:
    rows: list[tuple[str, str]] = [
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("numpy", _version("numpy") or "not installed"),
        ("numba", _version("numba") or "not installed"),
        ("numba-cuda", _version("numba-cuda") or "not installed"),
        ("cuda-bindings", _version("cuda-bindings") or "not installed"),
        ("cuda-core", _version("cuda-core") or "not installed"),
        ("NVVM (PyPI)", _version("nvidia-cuda-nvcc-cu12") or "not installed"),
        *_extras(),
        ("simulator", "on (NUMBA_ENABLE_CUDASIM=1)" if simulator_enabled() else "off"),
    ]
    ok, reason = cuda_available()
    if simulator_enabled():
        rows.append(("CUDA driver", "not used (simulator)"))
    else:
        try:
            from numba import cuda
            driver_ok = cuda.is_available()
        except Exception:
            driver_ok = False
        rows.append(("CUDA driver", "found" if driver_ok else f"not found: {driver_reason()}"))
        devices = _devices() if driver_ok else []
        rows += [("device", d) for d in devices] or [("devices", "none")]
    rows += _libraries()
    rows.append(("PTX compile", ptx_check()[1]))
    rows.append(("cuda target", "ready: " + reason if ok else "unavailable: " + reason))
    width = max(len(k) for k, _ in rows)
    lines = ["modelc doctor"] + [f"  {k:<{width}}  {v}" for k, v in rows]
    if not ok:
        lines.append("  hint: on a machine with an NVIDIA GPU: pip install 'modelc[cuda]', then "
                     "'modelc train SPEC --target cuda'; without one, use --target cpu")
    return "\n".join(lines)


if __name__ == "__main__":   # python -m modelc.doctor, before the CLI wires it up
    print(report())
