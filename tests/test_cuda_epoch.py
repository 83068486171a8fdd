"""The cuda target's epoch kernel, checked on the plans (no GPU, no simulator): every spec's
graphs get one, its arguments stay few whatever the model, the grid barriers stand exactly
where a kernel depends on an earlier one, and the generated source inlines every kernel with
its shared tiles declared once. Its results are checked under the simulator
(tests/cuda_sim_check.py: every spec comparison runs in it) and its PTX by tests/test_cuda_ptx.py."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from modelc.compiler.build import build_program
from modelc.compiler.codegen.cuda_epoch import EPOCH_NAME, epoch_for, schedule
from modelc.compiler.codegen.cuda_plan import GPU_CONFIG, PARAM_BYTES, SIM_CONFIG
from modelc.compiler.codegen.cuda_planner import plans_for
from modelc.grammar.parser import parse_file
from tests import cuda_cases

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(p.stem for p in (ROOT / "specs").glob("*.model"))


def _spec(name: str):
    return build_program(parse_file(ROOT / "specs" / f"{name}.model"))


def _programs():
    return [(f"specs/{s}", lambda s=s: _spec(s)) for s in SPECS] + \
        [(f"cases/{c}", lambda c=c: cuda_cases.program(c)) for c in ("blobs", "cnn", "features", "binary", "sparse")]


@pytest.mark.parametrize("config", [GPU_CONFIG, SIM_CONFIG], ids=["gpu", "sim"])
@pytest.mark.parametrize("name,build", _programs(), ids=[n for n, _ in _programs()])
def test_every_graph_has_an_epoch_kernel_with_few_arguments(name, build, config):
    for gname, plan in plans_for(build(), config).items():
        epoch = epoch_for(plan)
        assert not isinstance(epoch, str), f"{name} {gname}: {epoch}"
        assert len(epoch.params) <= 15 and epoch.param_bytes() <= PARAM_BYTES
        assert epoch.threads == config.tile ** 2
        tree = ast.parse(epoch.source)          # valid Python, one function, every kernel inlined once
        assert [f.name for f in tree.body] == [EPOCH_NAME]
        for k in plan.kernels:
            assert epoch.source.count(f"# {k.name}: ") == 1


def test_arguments_do_not_grow_with_the_model():
    small = epoch_for(plans_for(cuda_cases.deep(2))["train"])
    large = epoch_for(plans_for(cuda_cases.deep(40))["train"])
    assert len(large.params) == len(small.params)
    assert len(large.arrays) > 10 * len(small.arrays) // 2      # the arrays moved into the table of spans


def test_the_mnist_step_waits_only_where_a_kernel_depends_on_the_one_before():
    """By hand: forward 0-2 each read the one before; the softmax and loss rows (3) run in the
    last product's blocks, which hold whole rows of 10 logits; the two products from the loss
    gradient (g @ W3^T and h2^T @ g) are independent, and so are the next pair; the first
    layer's weight gradient reads g1; the update writes what every gradient kernel read."""
    plan = plans_for(_spec("mnist"))["train"]
    runs = [[[k.name[:3] for k in unit] for unit in run] for run in schedule(plan.kernels)]
    assert runs == [[["k00"]], [["k01"]], [["k02", "k03"]], [["k04"], ["k05"]], [["k06"], ["k07"]], [["k08"]],
                    [["k09"]]]
    assert epoch_for(plan).barriers == 7            # 6 between runs, one before the next batch
    evaluate = schedule(plans_for(_spec("mnist"))["evaluate"].kernels)
    assert [[[k.name[:3] for k in unit] for unit in run] for run in evaluate] == [[["k00"]], [["k01"]],
                                                                                  [["k02", "k03"]]]


def test_a_row_kernel_joins_only_a_product_that_holds_its_whole_rows():
    """blobs has 3 classes: on the GPU a row of 3 takes 4 lanes and a block 64 rows, not the
    product's 16, so the rows kernel runs after a barrier; in the simulator's 4 x 4 tiles it joins."""
    for config, joined in ((GPU_CONFIG, False), (SIM_CONFIG, True)):
        plan = plans_for(cuda_cases.program("blobs"), config)["train"]
        units = [[k.kind for k in unit] for run in schedule(plan.kernels) for unit in run]
        assert (["matmul", "rows"] in units) == joined, (config, units)


def test_shared_tiles_are_declared_once_and_reused():
    epoch = epoch_for(plans_for(_spec("mnist"))["train"])
    loop = epoch.source.split("for s in range(s0, s1):", 1)[1]
    assert "cuda.shared.array" not in loop
    assert epoch.source.count("cuda.shared.array((16, 17), float32)") == 2     # A and B tiles for 8 products


def test_kernels_with_blocks_of_different_sizes_have_no_epoch_kernel():
    mixed = dataclasses.replace(GPU_CONFIG, threads=128)     # elementwise blocks of 128, products of 256
    plan = plans_for(cuda_cases.program("features"), mixed)["train"]
    reason = epoch_for(plan)
    assert isinstance(reason, str) and "blocks differ in size" in reason
