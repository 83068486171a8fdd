"""The cuda target's launch limits, checked on the plans (no GPU, no simulator): every kernel's
arguments fit a launch's 4 KB (the optimizer splits into several kernels before they would
not), the rows one launch can take follow from the grid's 65,535 blocks along y and z, and
`modelc compile --target cuda` prints the launches and the memory plan without a GPU."""
from __future__ import annotations

from pathlib import Path

import pytest

from modelc import cli
from modelc.compiler.build import build_program
from modelc.compiler.codegen.cuda_plan import GRID_YZ, PARAM_BYTES, CudaCodegenError
from modelc.compiler.codegen.cuda_planner import plans_for
from modelc.grammar.parser import parse_file
from tests import cuda_cases

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("spec", ["mnist", "mnist_cnn", "images_cnn", "functional", "blobs"])
def test_every_kernel_of_the_specs_fits_a_launch(spec):
    for plan in plans_for(build_program(parse_file(ROOT / "specs" / f"{spec}.model"))).values():
        assert max(k.param_bytes() for k in plan.kernels) <= PARAM_BYTES
        assert plan.max_rows() >= 32768        # rows tile y (products) or z (convolutions), never one block each


@pytest.mark.parametrize("layers,clip", [(8, True), (40, False)])
def test_the_optimizer_splits_before_its_arguments_pass_4_kb(layers, clip):
    program = cuda_cases.deep(layers, clip)
    plan = plans_for(program)["train"]
    updates = [k for k in plan.kernels if "_update_" in k.name]
    assert all(k.param_bytes() <= PARAM_BYTES for k in plan.kernels)
    assert len(updates) == -(-(2 * layers + 2) // 14)      # 14 parameters per kernel with Adam
    updated = [op.inputs[0].name for k in updates for op in k.ops]
    assert sorted(updated) == sorted(p.value.name for p in program.params)


def test_a_kernel_past_the_argument_limit_is_a_message_not_a_launch_failure():
    """A global clip norm's sum of squares over 82 gradients is one elementwise kernel that is
    not split (yet): the model is refused when it is planned, with the kernel named."""
    with pytest.raises(CudaCodegenError, match=r"kernel k\d+_ew_grads_sumsq takes \d+ bytes of arguments, "
                                               r"more than a launch's 4096"):
        plans_for(cuda_cases.deep(40))


def test_rows_per_launch_follow_from_the_grid():
    plan = plans_for(build_program(parse_file(ROOT / "specs" / "mnist.model")))["evaluate"]
    assert plan.max_rows() == GRID_YZ * 16       # 16-row tiles of the products, on the grid's y axis


def test_compile_for_cuda_prints_the_plan_without_a_gpu(capsys):
    assert cli.main(["compile", str(ROOT / "specs" / "mnist.model"), "--target", "cuda"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("train: 10 launches per step")
    assert "weights and optimizer state: 0.63 MiB" in out
    assert "planned only" in err or "compiled for cuda" in out
