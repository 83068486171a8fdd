"""The cpu target's generic kernels: one `@njit` function per operation, written
once for every size (the lowerings in `cpu_lower.py` turn ops into calls of them).

A kernel takes views of the arena (2-D `m` or 1-D `v`, float32), whole-number
operands (`i`), float64 options (`f`, cast to float32 where the reference
computes in float32) and, where it needs it, the update count (`step`) and the
global row its batch starts at (`row`: a data-parallel share's, else 0). Sizes
come from the views' shapes, never from the source, so the kernels depend
only on this file and the activations' registry (`elementwise.ACTIVATIONS`):
they are compiled once per machine and shared by every spec (see `cpu.py`).
The losses, metrics and updates are `cpu_formulas.py`'s kernels.

Semantics are the NumPy references' in `primitives.py`, in float32 and in the
same order of operations, so the cpu target agrees with the numpy target to
the last few bits.
"""
from __future__ import annotations

from dataclasses import dataclass

from modelc.compiler import elementwise, expr
from modelc.compiler.ir import BATCH, Op, Value

# ---------------------------------------------------------------- kernels and calls

KINDS = ("m", "v", "i", "f", "step", "row")
IMPLICIT = {"step": "step", "row": "first_row"}     # kinds the interpreter passes itself


@dataclass(frozen=True)
class Kernel:
    name: str
    params: tuple[tuple[str, str], ...]     # (kind, name) in call order
    body: tuple[str, ...]

    def source(self) -> str:
        head = f"def {self.name}({', '.join(name for _, name in self.params)}):"
        return "\n".join(["@njit(**JIT)", head] + ["    " + line if line else line for line in self.body])


@dataclass(frozen=True)
class View:
    """A value seen as `rows` x `cols` (rows times the batch size when `batched`)."""
    value: Value
    rows: int
    batched: bool
    cols: int


@dataclass(frozen=True)
class Call:
    """One kernel call: its operands in the kernel's order (the IMPLICIT kinds left out)."""
    kernel: str
    operands: tuple


@dataclass(frozen=True)
class Formula:
    """An op whose kernel cpu_formulas generates (see cpu_formula_calls.py)."""
    op: Op


KERNELS: dict[str, Kernel] = {}
HELPERS: dict[str, str] = {}     # name -> source of a plain @njit function kernels call (no opcode)


def kernel(name: str, params: str, *body: str) -> None:
    """Register a kernel; `params` is "kind:name kind:name ...", `body` its source lines."""
    pairs = tuple(tuple(p.split(":")) for p in params.split())
    assert all(kind in KINDS for kind, _ in pairs), params
    KERNELS[name] = Kernel(name, pairs, body)


def helper(name: str, params: str, *body: str) -> None:
    """Register a function that kernels call (a convolution's patch copy), compiled once."""
    HELPERS[name] = "\n".join([f"@njit(**JIT)", f"def {name}({params}):"] +
                               ["    " + line if line else line for line in body])


def mat(value: Value) -> View:
    """The value as 2-D: every dimension but the last as rows (a vector is one row)."""
    if value.rank < 2:
        return flat(value)
    rows = 1
    for d in value.shape[1 if value.batched else 0:-1]:
        rows *= int(d)
    return View(value, rows, value.batched, int(value.shape[-1]))


def flat(value: Value) -> View:
    """The value as one row of all its elements (per sample when batched)."""
    return View(value, 1, value.batched, value.sample_size())


def split_at(value: Value, axis: int) -> tuple[int, bool, int]:
    """(outer, batched, inner): the dimensions before `axis` as rows, those after as a width."""
    outer, inner = 1, 1
    for d in value.shape[:axis]:
        outer *= 1 if d == BATCH else int(d)
    for d in value.shape[axis + 1:]:
        inner *= int(d)
    return outer, value.batched and axis > 0, inner


# ---------------------------------------------------------------- linear algebra

for _ta in (False, True):
    for _tb in (False, True):
        kernel(f"k_matmul_{'t' if _ta else 'n'}{'t' if _tb else 'n'}", "m:a m:b m:out",
               f"np.dot(a{'.T' if _ta else ''}, b{'.T' if _tb else ''}, out)")

kernel("k_bias_add", "m:x v:b m:z",
       "rows, cols = x.shape", "for i in range(rows):", "    for j in range(cols):",
       "        z[i, j] = x[i, j] + b[j]")

kernel("k_sum_to_last", "m:x v:out",
       "rows, cols = x.shape", "for j in range(cols):", "    out[j] = 0",
       "for i in range(rows):", "    for j in range(cols):", "        out[j] += x[i, j]")

# ---------------------------------------------------------------- structure

kernel("k_add", "v:a v:b v:out", "for i in range(out.shape[0]):", "    out[i] = a[i] + b[i]")
kernel("k_mul", "v:a v:b v:out", "for i in range(out.shape[0]):", "    out[i] = a[i] * b[i]")
kernel("k_copy_cols", "m:x m:out i:offset",
       "rows, cols = x.shape", "for i in range(rows):", "    for j in range(cols):",
       "        out[i, offset + j] = x[i, j]")
kernel("k_slice_cols", "m:x m:out i:start",
       "rows, cols = out.shape", "for i in range(rows):", "    for j in range(cols):",
       "        out[i, j] = x[i, start + j]")
kernel("k_dropout", "m:x m:y m:mask i:seed step:step row:first_row f:rate f:keep_",
       "keep = f32(keep_)", "rows, cols = x.shape", "for i in range(rows):", "    for j in range(cols):",
       "        m = f32(1.0) if dropout_uniform(seed, step, (first_row + i) * cols + j) >= rate else f32(0.0)",
       "        mask[i, j] = m / keep", "        y[i, j] = x[i, j] * mask[i, j]")

# ---------------------------------------------------------------- activations


def _activation_kernels(name: str, act: elementwise.Activation) -> None:
    """Forward, bias + forward, derivative and derivative + bias gradient, for one activation."""
    options = " ".join(f"f:{p}_" for p in act.params)
    casts = tuple(f"{p} = f32({p}_)" for p in act.params)
    local = {p: p for p in act.params}

    def scalar(expression: str, x: str, y: str | None = None) -> str:
        return expr.to_scalar_source(expression, {"x": x, **({"y": y} if y else {}), **local})

    kernel(f"k_act_{name}", f"v:x v:y {options}", *casts, "for i in range(x.shape[0]):",
           f"    y[i] = {scalar(act.forward, 'x[i]')}")
    kernel(f"k_bias_act_{name}", f"m:x v:b m:z m:y {options}", *casts,
           "rows, cols = x.shape", "for i in range(rows):", "    for j in range(cols):",
           "        t = x[i, j] + b[j]", "        z[i, j] = t", f"        y[i, j] = {scalar(act.forward, 't')}")
    derivative = scalar(act.derivative, "x[i, j]", "y[i, j]")
    loop = ("rows, cols = x.shape", "for i in range(rows):", "    for j in range(cols):",
            f"        t = g[i, j] * ({derivative})", "        o[i, j] = t")
    kernel(f"k_act_grad_{name}", f"m:g m:x m:y m:o {options}", *casts, *loop)
    kernel(f"k_act_grad_bias_{name}", f"m:g m:x m:y m:o v:bias {options}", *casts,
           "for j in range(bias.shape[0]):", "    bias[j] = 0", *loop, "        bias[j] += t")


for _name, _act in elementwise.ACTIVATIONS.items():
    _activation_kernels(_name, _act)

_ROW_MAX = ("rows, cols = x.shape", "for i in range(rows):", "    top = x[i, 0]",
            "    for j in range(1, cols):", "        top = max(top, x[i, j])", "    total = f32(0.0)")
# z = x / T, as the reference divides before subtracting the max
kernel("k_softmax", "m:x m:y f:t_", "t = f32(t_)", *_ROW_MAX,
       "    for j in range(cols):", "        e = math.exp(x[i, j] / t - top / t)", "        y[i, j] = e",
       "        total += e", "    for j in range(cols):", "        y[i, j] = y[i, j] / total")
kernel("k_log_softmax", "m:x m:y f:t_", "t = f32(t_)", *_ROW_MAX,
       "    for j in range(cols):", "        total += math.exp(x[i, j] / t - top / t)",
       "    lse = math.log(total)", "    for j in range(cols):",
       "        y[i, j] = (x[i, j] / t - top / t) - lse")
_GRAD_ROWS = ("t = f32(t_)", "rows, cols = y.shape", "for i in range(rows):", "    s = f32(0.0)",
              "    for j in range(cols):")
kernel("k_softmax_grad", "m:g m:y m:o f:t_", *_GRAD_ROWS, "        s += g[i, j] * y[i, j]",
       "    for j in range(cols):", "        o[i, j] = y[i, j] * (g[i, j] - s) / t")
kernel("k_log_softmax_grad", "m:g m:y m:o f:t_", *_GRAD_ROWS, "        s += g[i, j]",
       "    for j in range(cols):", "        o[i, j] = (g[i, j] - math.exp(y[i, j]) * s) / t")

# ---------------------------------------------------------------- batch mean and constants

kernel("k_mean", "v:x v:out", "acc = 0.0", "for i in range(x.shape[0]):", "    acc += x[i]",
       "out[0] = f32(acc / x.shape[0])")
kernel("k_mean_grad", "v:g v:out", "for i in range(out.shape[0]):", "    out[i] = g[0] / f32(out.shape[0])")
kernel("k_constant", "v:out f:value", "out[0] = f32(value)")
