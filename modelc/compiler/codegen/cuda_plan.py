"""The launch plan of the `cuda` target: what the planner produces and the
backend runs, as plain data (pure Python, never imports numba).

A `Plan` is one graph's kernels (`Kernel`: name, source, parameters, grid and
block), the device buffers they share (`Buffer`), the per-step scalars the host
computes (`StepScalars`) and where each result ends up. `LaunchConfig` holds the
block shapes (`GPU_CONFIG` for a device, `SIM_CONFIG` for Numba's simulator).

Storage: every value lives in a flat, C-contiguous device buffer (`float32[::1]`)
indexed with compile-time strides, so `reshape` is free (an alias), index
arithmetic folds to constants, and one signature shape fits every buffer. Batched
buffers hold `capacity * sample_size` elements; the batch size `nb` is a kernel
argument. Data inputs are never copied per batch: kernels read their rows
through the epoch's index (`X[idx[off + r] * S + c]`).

Also the small helpers every stage of code generation uses to write source:
`lit` (float32 literals), `indent`, `size_of`.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from modelc.compiler.ir import I64, Graph, Op, Value, format_op
from modelc.errors import ModelcError


class CudaCodegenError(ModelcError):
    """A graph the cuda target cannot lower (a compiler limitation, not a user mistake)."""

    def __init__(self, message: str):
        super().__init__(f"the cuda target cannot compile this model: {message}",
                         hint="use --target cpu for this model, and report it")


@dataclass(frozen=True)
class LaunchConfig:
    """Block shapes. The GPU defaults are what a real device wants; the simulator
    runs every thread as a Python thread, so it gets the same kernels with
    smaller blocks (the code paths, ragged edges and reductions are identical)."""
    tile: int = 16          # matmul tile: tile x tile threads, tile x (tile+1) shared floats per operand
    threads: int = 256      # elementwise / optimizer / copy blocks
    row_threads: int = 256  # row kernels: lanes x rows
    max_lanes: int = 32     # lanes per row (a warp per row for wide rows)
    col_lanes: int = 32     # column reductions: lanes over columns ...
    col_rows: int = 8       # ... and rows striding down the batch
    conv_chunk: int = 512   # rows (B*OH*OW) per partial sum of a convolution's kernel gradient


GPU_CONFIG = LaunchConfig()
SIM_CONFIG = LaunchConfig(tile=4, threads=16, row_threads=16, max_lanes=4, col_lanes=4, col_rows=4, conv_chunk=32)


# ---------------------------------------------------------------- small helpers

def lit(x) -> str:
    """A float32 literal: the value rounded to float32 first, then written exactly."""
    assert math.isfinite(float(x)), f"internal: the non-finite number {x!r} would be written into generated code"
    v = float(np.float32(x))
    if math.isinf(v):    # a finite option beyond float32's range: the infinity float32 arithmetic makes
        return "f32(math.inf)" if v > 0 else "f32(-math.inf)"
    return f"f32({v!r})"


def size_of(shape) -> int:
    """The number of elements of a shape of integers."""
    n = 1
    for d in shape:
        n *= d
    return n


def indent(lines: list[str], n: int = 1) -> list[str]:
    """Source lines indented n levels."""
    return ["    " * n + line for line in lines]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------- the plan

GRID_X, GRID_YZ = 2 ** 31 - 1, 65535     # blocks per launch along x, and along y or z
# Bytes a kernel argument takes in the launch's parameter buffer: numba passes a 1-D array as a
# struct of 7 words (meminfo, parent, size, itemsize, data, shape, stride). The buffer holds 4 KB
# on every GPU numba-cuda supports (newer drivers allow more; modelc does not count on it).
ARG_BYTES = {"f32[]": 56, "i64[]": 56, "f64[]": 56, "i64": 8, "f32": 4}
PARAM_BYTES = 4096


@dataclass
class KParam:
    """A kernel argument: its name in the source, its numba type and where the host finds it.
    source: ("value", base id) | ("data", "x"|"y") | "idx" | "off" | "nb" | "step" | "sums" | ("opt", group, k)."""
    name: str
    type: str               # f32[] | i64[] | f64[] | i64 | f32
    source: object


def param_bytes(params: list[KParam]) -> int:
    """Bytes of a launch's parameter buffer that arguments `params` take."""
    return sum(ARG_BYTES[p.type] for p in params)


@dataclass
class Extent:
    """A launch dimension: ceil((per_batch * nb + fixed) / div) blocks."""
    per_batch: int
    fixed: int
    div: int

    def blocks(self, nb: int) -> int:
        return max(1, _cdiv(self.per_batch * nb + self.fixed, self.div))

    def source(self, nb: str) -> str:
        """`blocks` as generated source, for a batch held in the variable `nb`."""
        total = " + ".join(t for t in ((f"{self.per_batch} * {nb}" if self.per_batch else ""),
                                        (str(self.fixed) if self.fixed else "")) if t) or "0"
        return f"max(1, ({total} + {self.div - 1}) // {self.div})"

    def __str__(self) -> str:
        total = " + ".join(t for t in ((f"{self.per_batch}*nb" if self.per_batch else ""),
                                        (str(self.fixed) if self.fixed else "")) if t) or "0"
        return f"ceil(({total})/{self.div})"


@dataclass
class Kernel:
    name: str
    kind: str
    ops: list[Op]
    params: list[KParam]
    source: str
    grid: tuple[Extent, ...]
    block: tuple[int, ...]
    writes: set[int] = field(default_factory=set)    # base ids stored
    reads: set[int] = field(default_factory=set)
    body: list[str] = field(default_factory=list)    # the source lines inside the def, before `index_lines`

    def grid_dims(self, nb: int) -> tuple[int, ...]:
        return tuple(e.blocks(nb) for e in self.grid)

    def param_bytes(self) -> int:
        return param_bytes(self.params)

    def signature_text(self) -> str:
        names = {"f32[]": "float32[::1]", "i64[]": "int64[::1]", "f64[]": "float64[::1]",
                 "i64": "int64", "f32": "float32"}
        return "void(" + ", ".join(names[p.type] for p in self.params) + ")"

    def describe(self) -> str:
        ops = "; ".join(format_op(op).strip().split("    #")[0] for op in self.ops)
        grid = ", ".join(str(e) for e in self.grid)
        return f"{self.name} [{self.kind}] grid=({grid}) block={self.block}: {ops}"


@dataclass
class StepScalars:
    """Float32 scalars an update kernel takes per step, computed on the host from
    the step number and the run's learning-rate factor exactly as the reference does (no
    device readback): `compute(step, attrs, lr_scale)` is the optimizer lowering's `scalars`."""
    prim: str
    attrs: dict
    compute: Callable[[int, dict, float], tuple]

    def values(self, step: int, lr_scale: float) -> tuple:
        return self.compute(int(step), self.attrs, float(lr_scale))


@dataclass
class Buffer:
    value: Value
    batched: bool
    per_row: int            # elements per sample (batched) or in total
    dtype: str

    def size(self, rows: int) -> int:
        """Elements it holds for a batch of `rows`."""
        return self.per_row * (rows if self.batched else 1)

    def nbytes(self, rows: int) -> int:
        return self.size(rows) * (8 if self.dtype == I64 else 4)


@dataclass
class Plan:
    graph: Graph
    config: LaunchConfig
    gather: bool
    kernels: list[Kernel]
    buffers: dict[int, Buffer]
    alias: dict[int, Value]              # value id -> the value whose storage it shares
    data: dict[int, str]                 # base id of a data value -> "x" | "y"
    outputs: dict[str, tuple]            # key -> ("sum", slot) | ("buffer", base id)
    n_sums: int
    step_scalars: list[StepScalars]
    module_source: str

    @property
    def source_hash(self) -> str:
        return hashlib.sha256(self.module_source.encode()).hexdigest()[:20]

    def describe(self) -> str:
        return "\n".join(k.describe() for k in self.kernels)

    def oversized(self) -> list[Kernel]:
        """Kernels whose arguments pass a launch's PARAM_BYTES: they run only inside the epoch
        kernel (`cuda_epoch`), which takes arenas instead of arrays."""
        return [k for k in self.kernels if k.param_bytes() > PARAM_BYTES]

    def max_rows(self) -> int:
        """The most rows one launch of every kernel can take: a grid's y and z axes stop at
        GRID_YZ blocks, its x axis at GRID_X (matrix products tile rows on y)."""
        limit = GRID_X
        for k in self.kernels:
            for axis, e in enumerate(k.grid):
                if e.per_batch:
                    cap = GRID_X if axis == 0 else GRID_YZ
                    limit = min(limit, (cap * e.div - e.fixed) // e.per_batch)
        return max(1, limit)


def plans_text(plans: dict[str, Plan], weights: int, batch: int, epochs: dict) -> str:
    """What `modelc compile --target cuda` prints: each graph's launches and the device memory
    it holds at `batch` rows (its buffers, then the parameters and optimizer state, `weights`
    float32 elements, resident once for every graph). `epochs`: each graph's `cuda_epoch.Epoch`,
    or why it has none."""
    lines = []
    for name, plan in plans.items():
        per = "per step" if name == "train" else "per batch"
        buffers = sum(b.nbytes(batch) for b in plan.buffers.values())
        epoch = epochs[name]
        if isinstance(epoch, str):
            lines.append(f"{name}: {len(plan.kernels)} launches {per} (no epoch kernel: {epoch})")
        else:
            call = "epoch, or per part of one between progress updates" if name == "train" else "call"
            lines.append(f"{name}: 1 launch per {call} (the epoch kernel: {len(plan.kernels)} kernels and "
                         f"{epoch.barriers} grid barriers {per}, {epoch.param_bytes()} B of arguments); "
                         f"kernel by kernel, {len(plan.kernels)} launches {per}")
        lines.append(f"  {buffers / 2 ** 20:.2f} MiB of buffers at batch {batch}, at most {plan.max_rows():,} rows "
                     f"per launch kernel by kernel")
        lines += [f"  {k.name}  grid ({', '.join(map(str, k.grid))})  block {k.block}  "
                  f"{k.param_bytes()} B of arguments" + (" (too many to launch alone)" if k.param_bytes() > PARAM_BYTES
                                                         else "") for k in plan.kernels]
    lines.append(f"weights and optimizer state: {weights * 4 / 2 ** 20:.2f} MiB, resident")
    return "\n".join(lines)
