"""The cuda target's kernels as PTX and cubins, without a GPU.

`plan_ptx` and `emit_ptx` compile every kernel of a plan or a program to PTX
with NVVM (`modelc compile --target cuda --emit-ptx DIR` calls `emit_ptx`);
`link_report` links PTX to cubins with nvJitLink and reports the registers,
shared memory, spills and stack ptxas assigned to each kernel. Both need the
CUDA compiler libraries, not a device. `main` is the command line for the
whole report:

    python -m modelc.compiler.codegen.cuda_ptx SPEC [--arch sm_90] [--out DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modelc.compiler.build import build_program
from modelc.compiler.codegen.cuda_env import simulator_enabled
from modelc.compiler.codegen.cuda_epoch import EPOCH_NAME, epoch_for
from modelc.compiler.codegen.cuda_module import epoch_function, kernel_signature, load_module, signature
from modelc.compiler.codegen.cuda_plan import GPU_CONFIG, LaunchConfig, Plan
from modelc.compiler.codegen.cuda_planner import plans_for
from modelc.errors import ModelcError
from modelc.files import atomic_write
from modelc.grammar.parser import parse_file


def _cc(arch: str) -> tuple[int, int]:
    m = re.fullmatch(r"(?:sm_|compute_)?(\d)(\d+)", arch.strip())
    if not m:
        raise ModelcError(f"unknown GPU architecture '{arch}'", hint="use sm_80 (A100), sm_90 (H100), sm_89 ...")
    return int(m.group(1)), int(m.group(2))


def _compiler_error(err: Exception) -> ModelcError:
    return ModelcError(f"cannot compile CUDA kernels: {err}",
                       hint="install the CUDA compiler libraries with pip install 'modelc[cuda]' "
                            "(numba-cuda[cu12]) and run 'modelc doctor'")


def plan_ptx(plan: Plan, arch: str = "sm_90", _memo: dict | None = None, epoch: bool = True) -> dict[str, str]:
    """PTX of every kernel of one plan, by kernel name, and of its epoch kernel (`EPOCH_NAME`)
    unless `epoch` is False. Needs the CUDA compiler libraries (NVVM, libdevice), not a GPU;
    not available under the simulator."""
    if simulator_enabled():
        raise ModelcError("PTX cannot be emitted under the CUDA simulator",
                          hint="unset NUMBA_ENABLE_CUDASIM")
    from numba import cuda
    cc = _cc(arch)
    memo = {} if _memo is None else _memo
    module = load_module(plan)
    out = {}
    for k in plan.kernels:
        key = (k.source, k.signature_text(), cc)      # evaluate and predict share kernels
        if key not in memo:
            with _compiling():
                memo[key], _ = cuda.compile_ptx(getattr(module, k.name), kernel_signature(k), cc=cc)
        out[k.name] = memo[key]
    epoch = epoch_for(plan) if epoch else "not asked for"
    if not isinstance(epoch, str):
        with _compiling(), _target_device(cc):
            out[EPOCH_NAME], _ = cuda.compile_ptx(epoch_function(plan, epoch), signature(epoch.params), cc=cc)
    return out


@contextlib.contextmanager
def _compiling():
    """NVVM or libdevice missing is the user's to fix, said as such; NVVM rejecting a kernel
    (NvvmError) or a typing error is a compiler bug and propagates."""
    try:
        yield
    except ModelcError:
        raise
    except Exception as err:
        if type(err).__name__ in ("NvvmSupportError", "CudaSupportError"):
            raise _compiler_error(err) from None
        raise


@contextlib.contextmanager
def _target_device(cc: tuple[int, int]):
    """numba-cuda compiles the implementation of `cuda.cg.this_grid()` (an overload, so a
    device function) for the current device's compute capability, even inside `compile_ptx`,
    which fails where there is no GPU. Without one, the target's `cc` stands in for it while
    the epoch kernel compiles; with one, nothing changes."""
    from numba import cuda
    from numba.cuda import dispatcher
    if cuda.is_available():
        yield
        return

    class _Target:
        compute_capability = cc
    real = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: _Target()
    try:
        yield
    finally:
        dispatcher.get_current_device = real


def emit_ptx(program, out_dir, arch: str = "sm_90", config: LaunchConfig = GPU_CONFIG) -> list[Path]:
    """Compile every generated kernel of every graph to PTX for `arch` and write one
    `<graph>.<kernel>.ptx` per kernel (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    memo: dict = {}
    paths: list[Path] = []
    for gname, plan in plans_for(program, config).items():
        for name, ptx in plan_ptx(plan, arch, memo).items():
            path = out / f"{gname}.{name}.ptx"
            atomic_write(path, ptx.encode(), make_folder=True)
            paths.append(path)
    return paths


@dataclass
class KernelResources:
    """What ptxas assigned one kernel. `shared_bytes` is nvJitLink's figure: static
    shared memory, plus on sm_90 the 1 KB per block the system reserves."""
    kernel: str
    arch: str
    registers: int
    shared_bytes: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    cubin_bytes: int

    def __str__(self) -> str:
        return (f"{self.kernel:<44} {self.arch}  {self.registers:>3} regs  {self.shared_bytes:>5} B smem  "
                f"spills {self.spill_stores}/{self.spill_loads} B  stack {self.stack_bytes} B")


def _nvjitlink_link(ptx: bytes, arch: str, name: str) -> tuple[bytes, str]:
    from cuda.bindings import nvjitlink
    handle = nvjitlink.create(2, [f"-arch={arch}", "-verbose"])
    try:
        try:
            nvjitlink.add_data(handle, nvjitlink.InputType.PTX, ptx, len(ptx), name)
            if b"cudaCG" in ptx:     # a cooperative kernel's grid barrier lives in the device runtime
                from numba.cuda.cudadrv.libs import get_cudalib
                nvjitlink.add_file(handle, nvjitlink.InputType.LIBRARY, get_cudalib("cudadevrt", static=True))
            nvjitlink.complete(handle)
        except Exception as err:
            size = nvjitlink.get_error_log_size(handle)
            log = bytearray(size)
            nvjitlink.get_error_log(handle, log)
            raise ModelcError(f"nvJitLink rejected {name}: {log.decode(errors='replace').strip() or err}")
        cubin = bytearray(nvjitlink.get_linked_cubin_size(handle))
        nvjitlink.get_linked_cubin(handle, cubin)
        log = bytearray(nvjitlink.get_info_log_size(handle))
        nvjitlink.get_info_log(handle, log)
        return bytes(cubin), log.decode(errors="replace").rstrip("\x00")
    finally:
        nvjitlink.destroy(handle)


def _first(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else 0


def link_report(ptx_files, arch: str = "sm_90", cubin_dir=None) -> list[KernelResources]:
    """Link each PTX file to a cubin with nvJitLink (no GPU needed) and report the
    registers, shared memory, spills and stack ptxas assigned to its kernel."""
    try:
        from cuda.bindings import nvjitlink  # noqa: F401
    except ImportError as err:
        raise ModelcError(f"nvJitLink is not available: {err}",
                          hint="pip install cuda-bindings nvidia-nvjitlink-cu12 (part of 'modelc[cuda]')")
    major, minor = _cc(arch)
    sm = f"sm_{major}{minor}"
    rows = []
    for path in map(Path, ptx_files):
        cubin, log = _nvjitlink_link(path.read_bytes(), sm, path.name)
        if cubin_dir is not None:
            atomic_write(Path(cubin_dir) / (path.stem + f".{sm}.cubin"), cubin, make_folder=True)
        # the kernel's own line: a cooperative kernel's cubin also holds the device runtime's functions
        entry = re.search(r"Compiling entry function '([^']+)'", log)
        own = re.search(rf"Function properties for '{re.escape(entry.group(1))}':\s*\n([^\n]*)", log) if entry else None
        line = own.group(1) if own else log
        rows.append(KernelResources(
            kernel=path.stem, arch=sm, registers=_first(r"used (\d+) registers", line),
            shared_bytes=_first(r"(\d+) bytes smem", line),
            spill_stores=_first(r"(\d+) bytes spill stores", log),
            spill_loads=_first(r"(\d+) bytes spill loads", log),
            stack_bytes=_first(r"(\d+) bytes stack frame", log), cubin_bytes=len(cubin)))
    return rows


def main(argv=None) -> int:
    """python -m modelc.compiler.codegen.cuda_ptx SPEC [--arch sm_90] [--out DIR]: the
    kernels of each graph, launches per training step, and per-kernel registers,
    shared memory and spills from nvJitLink (no GPU needed)."""
    parser = argparse.ArgumentParser(prog="python -m modelc.compiler.codegen.cuda_ptx", description=main.__doc__)
    parser.add_argument("spec")
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--out", help="keep the .ptx and .cubin files here")
    args = parser.parse_args(argv)
    try:
        program = build_program(parse_file(args.spec))
        for name, plan in plans_for(program).items():
            print(f"{name}: {len(plan.kernels)} kernels" + (" (launches per step)" if name == "train" else ""))
            for k in plan.kernels:
                print("  " + k.describe().split(": ", 1)[0])
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="modelc-ptx-"))
        paths = emit_ptx(program, out, args.arch)
        print(f"\nnvJitLink, {args.arch}:")
        for row in link_report(paths, args.arch, cubin_dir=out if args.out else None):
            print("  " + str(row))
    except ModelcError as err:
        print(err, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
