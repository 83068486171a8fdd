"""The cuda target's launch limits, checked on the plans (no GPU, no simulator): every kernel's
arguments fit a launch's 4 KB (the optimizer splits into several kernels before they would
not; a kernel that does not fit runs only in the epoch kernel), the rows one launch can take follow from the grid's 65,535 blocks along y and z, and
`modelc compile --target cuda` prints the launches and the memory plan without a GPU."""
from __future__ import annotations

from pathlib import Path

import pytest

from modelc import cli
from modelc.compiler.build import build_program
from modelc.compiler.codegen.cuda_epoch import epoch_for
from modelc.compiler.codegen.cuda_plan import GRID_YZ, PARAM_BYTES, plans_text
from modelc.compiler.codegen.cuda_planner import plans_for
from modelc.grammar.parser import parse_file
from tests import cuda_cases

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("spec", ["mnist", "mnist_cnn", "images_cnn", "functional", "blobs"])
def test_every_kernel_of_the_specs_fits_a_launch(spec):
    for plan in plans_for(build_program(parse_file(ROOT / "specs" / f"{spec}.model"))).values():
        assert not plan.oversized()
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


def test_a_kernel_past_the_argument_limit_runs_only_in_the_epoch_kernel():
    """A global clip norm's sum of squares over 82 gradients is one elementwise kernel too large
    to launch alone (it is not split, yet); the epoch kernel takes arenas, not arrays, so the
    model still has a plan that runs, and the listing says which kernel cannot launch alone."""
    plan = plans_for(cuda_cases.deep(40))["train"]
    assert [k.name for k in plan.oversized()] and all("sumsq" in k.name for k in plan.oversized())
    epoch = epoch_for(plan)
    assert not isinstance(epoch, str) and len(epoch.params) <= 15 and epoch.param_bytes() <= PARAM_BYTES
    text = plans_text({"train": plan}, 0, 8, {"train": epoch})
    assert "(too many to launch alone)" in text


def test_rows_per_launch_follow_from_the_grid():
    plan = plans_for(build_program(parse_file(ROOT / "specs" / "mnist.model")))["evaluate"]
    assert plan.max_rows() == GRID_YZ * 16       # 16-row tiles of the products, on the grid's y axis


def test_compile_for_cuda_prints_the_plan_without_a_gpu(capsys):
    assert cli.main(["compile", str(ROOT / "specs" / "mnist.model"), "--target", "cuda"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("train: 1 launch per epoch, or per part of one between progress updates (the epoch "
                          "kernel: 10 kernels and 7 grid barriers per step")
    assert "kernel by kernel, 10 launches per step" in out
    assert "weights and optimizer state: 0.63 MiB" in out
    assert "planned only" in err or "compiled for cuda" in out
