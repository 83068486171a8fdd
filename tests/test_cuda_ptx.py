"""The cuda target without a GPU, in this (simulator-free) process.

Every generated kernel is compiled to PTX by NVVM for real GPU architectures:
the simulator runs kernels as Python and checks no types, so this is what
catches code a GPU would reject. PTX is then linked to cubins by nvJitLink for
the register / shared-memory / spill report. Also: no GPU is a clear error.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install 'modelc[cuda]')")

from tests import cuda_cases  # noqa: E402
from modelc.compiler.build import build_program  # noqa: E402
from modelc.compiler.codegen.cuda import CudaBackend  # noqa: E402
from modelc.compiler.codegen.cuda_plan import GPU_CONFIG  # noqa: E402
from modelc.compiler.codegen.cuda_planner import plan_graph, plans_for  # noqa: E402
from modelc.compiler.codegen.cuda_ptx import emit_ptx, link_report, plan_ptx  # noqa: E402
from modelc.errors import ModelcError  # noqa: E402
from modelc.grammar.parser import parse_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPEC_FILES = sorted((ROOT / "specs").glob("*.model"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELC_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def compiler():
    """Skip only when the CUDA compiler libraries are missing (not on a broken compiler)."""
    from modelc import doctor
    ok, message = doctor.ptx_check()
    if not ok and ("not found" in message.lower() or "not installed" in message.lower()
                   or "nvvm" in message.lower() and "cannot" in message.lower()):
        pytest.skip(f"the CUDA compiler libraries are missing: {message} (pip install 'modelc[cuda]')")
    assert ok, f"PTX compilation is broken here: {message}"
    return True


def _program(path):
    return build_program(parse_file(path))


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("spec", ["mnist", "blobs"])
def test_every_kernel_of_the_spec_compiles_to_ptx(compiler, spec, arch, tmp_path):
    program = _program(ROOT / "specs" / f"{spec}.model")
    paths = emit_ptx(program, tmp_path / "ptx", arch)
    plans = plans_for(program)
    expected = [f"{g}.{k.name}.ptx" for g, plan in plans.items() for k in plan.kernels]
    expected += [f"{g}.epoch.ptx" for g in plans]        # every graph of these specs has an epoch kernel
    assert sorted(p.name for p in paths) == sorted(expected)
    for path in paths:
        text = path.read_text()
        assert ".visible .entry" in text, path.name
        assert f".target {arch}" in text, path.name
        if ".matmul_" in path.name or "_matmul" in path.name or path.name.endswith(".epoch.ptx"):
            assert ".shared" in text, f"{path.name}: the matmul tiles should live in shared memory"
        if path.name.endswith(".epoch.ptx"):   # a cooperative kernel: the grid barrier of the device runtime
            assert "cudaCGSynchronize" in text, path.name
    assert not list((tmp_path / "ptx").glob("*.tmp")), "a temporary file was left behind"


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_link_report_registers_smem_spills(compiler, arch, tmp_path):
    pytest.importorskip("cuda.bindings.nvjitlink", reason="nvJitLink (cuda-bindings) is not installed")
    program = _program(ROOT / "specs" / "mnist.model")
    paths = emit_ptx(program, tmp_path / "ptx", arch)
    rows = link_report(paths, arch, cubin_dir=tmp_path / "cubin")
    assert len(rows) == len(paths)
    tile = GPU_CONFIG.tile
    for row in rows:
        assert row.arch == arch and row.cubin_bytes > 0
        assert row.spill_stores == 0 and row.spill_loads == 0, str(row)
        if row.kernel.endswith(".epoch"):   # every kernel inlined: one resident block per SM at least,
            assert 0 < row.registers <= 255 and row.shared_bytes <= 48 * 1024, str(row)   # static smem fits
            continue
        assert 0 < row.registers <= 64, str(row)       # 256-thread blocks: room for 4 blocks per SM
        if "_matmul_" in row.kernel:    # two padded tiles; sm_90 adds the 1 KB it reserves per block
            tiles = 2 * tile * (tile + 1) * 4
            assert row.shared_bytes in ((tiles,) if arch == "sm_80" else (tiles, tiles + 1024)), str(row)
    assert len(list((tmp_path / "cubin").glob("*.cubin"))) == len(paths)


def test_mnist_runs_ten_kernels_per_step():
    """Documented in docs/cuda.md: 3 forward matmuls (bias + relu fused), one row
    kernel (softmax, loss, accuracy, loss gradient), 5 backward matmuls (activation
    gradients and bias gradients fused), one optimizer kernel."""
    plans = plans_for(_program(ROOT / "specs" / "mnist.model"))
    kinds = [k.kind for k in plans["train"].kernels]
    assert kinds == ["matmul"] * 3 + ["rows"] + ["matmul"] * 5 + ["update"]
    assert [k.kind for k in plans["evaluate"].kernels] == ["matmul"] * 3 + ["rows"]


@pytest.mark.parametrize("name", sorted(cuda_cases.SPECS))
def test_the_simulated_specs_compile_to_ptx(compiler, name, tmp_path):
    """The specs tests/cuda_sim_check.py trains under the simulator, as a GPU would get them."""
    paths = emit_ptx(cuda_cases.program(name), tmp_path, "sm_80")
    assert paths and all(".visible .entry" in p.read_text() for p in paths)


@pytest.mark.parametrize("path", [p for p in SPEC_FILES if p.stem not in ("mnist", "blobs")], ids=lambda p: p.stem)
def test_the_other_spec_files_compile_to_ptx(compiler, path, tmp_path):
    paths = emit_ptx(_program(path), tmp_path, "sm_90")
    assert paths and all(".target sm_90" in p.read_text() for p in paths)


def test_every_simulated_case_compiles_to_ptx(compiler):
    """Each kernel the simulator checks against numpy, in its GPU launch configuration."""
    memo: dict = {}
    count = 0
    for name, build in cuda_cases.CASES:
        plan = plan_graph(build().g.graph, GPU_CONFIG)
        ptx = plan_ptx(plan, "sm_80", memo, epoch=False)     # epoch kernels: the specs' tests
        assert set(ptx) == {k.name for k in plan.kernels}, name
        for kernel, text in ptx.items():
            assert ".visible .entry" in text, f"{name}: {kernel}"
        count += len(ptx)
    assert count >= len(cuda_cases.CASES)


def _check_links(rows, arch):
    """No spills, room for 4 blocks of 256 threads per SM (an epoch kernel: one, and a few spills);
    the GEMMs' two padded tiles (and the statistics kernels' reduction arrays) in shared memory."""
    tiles = 2 * GPU_CONFIG.tile * (GPU_CONFIG.tile + 1) * 4
    for row in rows:
        assert row.arch == arch and row.cubin_bytes > 0, str(row)
        if row.kernel.endswith(".epoch"):     # every kernel inlined: a few spills at most (docs/cuda.md),
            assert row.spill_stores <= 256 and row.spill_loads <= 256, str(row)    # static smem that fits
            assert 0 < row.registers <= 255 and row.shared_bytes <= 48 * 1024, str(row)
            continue
        assert row.spill_stores == 0 and row.spill_loads == 0 and row.stack_bytes == 0, str(row)
        assert 0 < row.registers <= 64, str(row)
        if re.search(r"\bk\d+_conv_", row.kernel.split(".")[-1]):
            assert row.shared_bytes in ((tiles,) if arch == "sm_80" else (tiles, tiles + 1024)), str(row)
        if re.search(r"\bk\d+_bnstats_", row.kernel.split(".")[-1]):
            assert row.shared_bytes >= 2 * GPU_CONFIG.threads * 4, str(row)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_convolution_pooling_normalization_kernels_compile_and_link(compiler, arch, tmp_path):
    """Every kernel of the image and normalization cases (GPU launch configuration) and of
    the cnn spec the simulator trains, as PTX for both architectures, linked by nvJitLink."""
    pytest.importorskip("cuda.bindings.nvjitlink", reason="nvJitLink (cuda-bindings) is not installed")
    memo: dict = {}
    paths = []
    cases = dict(cuda_cases.CASES)
    for n, name in enumerate(cuda_cases.IMAGE_CASES):
        plan = plan_graph(cases[name]().g.graph, GPU_CONFIG)
        for kernel, text in plan_ptx(plan, arch, memo, epoch=False).items():    # the cnn's epoch kernel below
            assert ".visible .entry" in text and f".target {arch}" in text, f"{name}: {kernel}"
            path = tmp_path / "cases" / f"case{n}.{kernel}.ptx"
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            paths.append(path)
    kinds = {k.kind for name in cuda_cases.IMAGE_CASES for k in plan_graph(cases[name]().g.graph).kernels}
    assert {"conv", "reduce", "pool", "bnstats", "moving", "rows", "ew"} <= kinds
    paths += emit_ptx(cuda_cases.program("cnn"), tmp_path / "cnn", arch)
    _check_links(link_report(paths, arch), arch)


def test_convnet_kernels_per_step():
    """specs/mnist_cnn.model (documented in docs/cuda.md): each convolution one implicit-GEMM
    kernel forward, its input gradient one, its kernel gradient two (chunk partials, then
    their sum with the bias gradient); pooling one kernel each way."""
    plans = plans_for(_program(ROOT / "specs" / "mnist_cnn.model"))
    kinds = [k.kind for k in plans["train"].kernels]
    assert kinds == ["conv", "pool", "conv", "pool", "matmul", "rows", "matmul", "matmul", "pool", "conv",
                     "conv", "reduce", "pool", "conv", "reduce", "update"], kinds
    assert [k.kind for k in plans["evaluate"].kernels] == ["conv", "pool", "conv", "pool", "matmul", "rows"]


# ---------------------------------------------------------------- no GPU

def test_no_gpu_is_a_clear_error():
    from modelc import doctor
    ok, reason = doctor.cuda_available()
    if ok:
        pytest.skip(f"this machine can run the cuda target ({reason})")
    program = _program(ROOT / "specs" / "blobs.model")
    with pytest.raises(ModelcError) as err:
        CudaBackend(program)
    text = str(err.value)
    assert "GPU" in text and reason.split(".")[0] in text
    assert "modelc doctor" in text


def test_doctor_reports_what_it_found():
    from modelc import doctor
    text = doctor.report()
    for item in ("numba-cuda", "simulator", "CUDA driver", "nvvm", "libdevice", "nvJitLink", "PTX compile",
                 "cuda target"):
        assert item in text, f"{item!r} missing from:\n{text}"
    ok, _ = doctor.cuda_available()
    assert ("ready" in text) == ok
