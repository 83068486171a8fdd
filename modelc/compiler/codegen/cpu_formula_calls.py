"""Formula ops as rows of the interpreter's table.

The losses, metrics, their gradients and the optimizer updates are kernels
that `cpu_formulas.py` generates from the catalog's formulas, generic over
sizes, with every option a float64 argument. For each of them the kernels
module gets a wrapper of one signature, `(A, L, r, f, n, step, scale)`, that reads
the kernel's arguments from a table row (`r`: arena offsets and whole
numbers; `f`: float64 options) and, for an update, computes the learning rate
of the step (times the run's factor, `scale`) and the rule's per-step scalars first. The interpreter calls the
wrappers a spec uses as first-class functions made from their addresses (a
table of numbers, like the rest), so neither it nor anything else is compiled
per spec; a wrapper (and its kernel) compiles the first time any spec uses
it, then comes from Numba's cache.

What a row holds comes from `cpu_formulas.lower_call`, the source of the
op's call for a driver: its arguments are read back here (values, whole
numbers, options, the schedule and the per-step scalars' options), so the
options are computed by the formula module alone, and kept on disk.
"""
from __future__ import annotations

import ast as pyast
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from modelc.compiler.codegen import cache
from modelc.compiler.formulas import SCHEDULE_FUNCTIONS
from modelc.compiler.ir import Op, Value
from modelc.compiler.primitives import PRIMITIVES
from modelc.errors import ModelcError
from modelc.files import atomic_write

# Every wrapper's type: (arena, label arena, row, its floats, batch rows, step, learning-rate factor) -> None.
WRAPPER = types.FunctionType(types.void(types.float32[::1], types.int64[::1], types.int64[::1],
                                        types.float64[::1], types.int64, types.int64, types.float64))
SCHEDULES = sorted(SCHEDULE_FUNCTIONS)
SCHEDULE_OPTIONS = 3       # the most options a schedule takes


@dataclass(frozen=True)
class FormulaCall:
    """A formula op as a row: the wrapper's slot, its whole-number operands (values stand
    for their arena offsets) and its float64 options."""
    slot: int
    ints: tuple
    floats: tuple[float, ...]


@intrinsic
def wrapper_at(_typingctx, c_address, jit_address):
    """The wrapper whose compiled code is at these addresses, as a first-class function."""
    def codegen(context, builder, signature, args):
        function = cgutils.create_struct_proxy(WRAPPER)(context, builder)
        pointer = context.get_value_type(types.voidptr)
        function.c_addr = builder.inttoptr(args[0], pointer)
        function.jit_addr = builder.inttoptr(args[1], pointer)
        function.py_addr = context.get_constant_null(types.voidptr)
        return function._getvalue()
    return WRAPPER(c_address, jit_address), codegen


def addresses(dispatcher) -> tuple[int, int]:
    """Compile (or load) a wrapper for its one signature: its cfunc and jit entry points."""
    signature = WRAPPER.signature
    dispatcher.compile(signature)
    result = dispatcher.get_compile_result(signature)
    return (result.library.get_pointer_to_function(result.fndesc.llvm_cfunc_wrapper_name),
            result.library.get_pointer_to_function(result.fndesc.llvm_func_name))


def _values(op: Op) -> list[Value]:
    values: list[Value] = []
    for value in op.inputs + op.outputs:
        if value not in values:
            values.append(value)
    return values


def _describe(op: Op) -> str:
    """Everything an op's row depends on besides the registries: its primitive, its
    attributes, and the dtype, shape and role of each value it reads or writes, in order."""
    values = _values(op)
    return repr((op.prim, sorted(op.attrs.items()), [values.index(v) for v in op.inputs + op.outputs],
                 [(v.dtype, tuple(v.shape), v.role) for v in values]))


def _read_call(op: Op) -> list:
    """[kernel, ints, floats] for an op, from `cpu_formulas.kernel_call`; a value in `ints`
    is ["v", its index in `_values(op)`], so the row can be kept as JSON."""
    from modelc.compiler.codegen.cpu_formulas import kernel_call
    call = kernel_call(op)
    values = _values(op)
    arrays = [["v", values.index(v)] for v in call.values]
    if call.schedule is None:
        return [call.kernel, arrays + list(call.sizes), list(call.floats)]
    sumsq = -1 if call.sumsq is None else ["v", values.index(call.sumsq)]
    schedule = list(call.schedule_args) + [0.0] * (1 + SCHEDULE_OPTIONS - len(call.schedule_args))
    return [call.kernel, arrays + list(call.sizes) + [sumsq, SCHEDULES.index(call.schedule)],
            schedule + list(call.scalar_options) + list(call.floats)]


class Formulas:
    """The formula kernels of one spec, each in a slot of the interpreter's address table.
    The rows already read are kept in a file of the cpu cache folder (`name`, the registries'
    hash), so a spec seen before needs nothing of `cpu_formulas` (its import alone costs 0.2 s).
    The file is a memo: one that cannot be read is ignored, one that cannot be written skipped."""

    def __init__(self, name: str):
        self.name = name
        self.kernels: list[str] = []
        self.known = self._read()
        self.learned = False

    @property
    def path(self) -> Path:
        return cache.folder("cpu") / self.name

    def _read(self) -> dict:
        try:
            known = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {}
        return known if isinstance(known, dict) else {}

    def add(self, op: Op) -> FormulaCall:
        key = _describe(op)
        if key not in self.known:
            self.known[key] = _read_call(op)
            self.learned = True
        name, ints, floats = self.known[key]
        if name not in self.kernels:
            self.kernels.append(name)
        values = _values(op)
        return FormulaCall(self.kernels.index(name), tuple(values[x[1]] if isinstance(x, list) else x for x in ints),
                           tuple(floats))

    def save(self) -> None:
        """Add the rows read in this process to the file (atomically)."""
        if self.learned:
            if self.path.is_dir() and not self.path.is_symlink():
                cache.remove_entry(self.path)      # damaged: a folder where the file should be
            try:
                atomic_write(self.path, json.dumps({**self._read(), **self.known}).encode(), make_folder=True)
            except ModelcError:
                pass        # only a memo: the next process reads the rows again
            self.learned = False


# ---------------------------------------------------------------- the wrappers (one per formula kernel)

def wrappers_source() -> str:
    """Every formula kernel, a wrapper for each, and the schedule by number."""
    from modelc.compiler.codegen import cpu_formulas
    names = list(cpu_formulas.KERNEL_NAMES)
    parts = [cpu_formulas.kernels_source(names), _schedule_source()]
    tree = pyast.parse(parts[0])
    params = {f.name: [a.arg for a in f.args.args] for f in tree.body if isinstance(f, pyast.FunctionDef)}
    rules = {p.formula({}).name: p.formula({}) for p in PRIMITIVES.values() if p.kind == "update"}
    for name in names:
        if name == "sum_squares":
            body = ["A[r[2]] = sum_squares(A[r[1]:r[1] + r[3]], r[3])"]
        elif name.startswith("update_"):
            body = _update_body(name, params[name], rules[name[len("update_"):]])
        else:
            body = _row_body(name, params[name])
        parts.append("\n".join(["@njit(**JIT)", f"def x_{name}(A, L, r, f, n, step, scale):"]
                                + ["    " + b for b in body]))
    return "\n\n\n".join(parts)


def _row_body(name: str, params: list[str]) -> list[str]:
    """row/grad kernels: (y, p, [g], out, rows, k, a0, ...); r = [slot, y, p, (g), out, k]."""
    grad = name.startswith("grad_")
    k_at = 5 if grad else 4
    y = "L[r[1]:r[1] + n]" if name.endswith("_labels") else "A[r[1]:r[1] + n * k].reshape((n, k))"
    args = [y, "A[r[2]:r[2] + n * k].reshape((n, k))"]
    if grad:
        args += ["A[r[3]:r[3] + n]", "A[r[4]:r[4] + n * k].reshape((n, k))"]
    else:
        args += ["A[r[3]:r[3] + n]"]
    options = len(params) - len(args) - 2
    return [f"k = r[{k_at}]", f"{name}({', '.join(args + ['n', 'k'] + [f'f[{i}]' for i in range(options)])})"]


def _update_body(name: str, params: list[str], rule) -> list[str]:
    """update kernels: (w, g, s0.., size, sumsq, lr, scalars.., a0..);
    r = [slot, w, g, s0.., size, sumsq offset or -1, schedule]; f = [lr, 3 schedule options, scalar options, a0..]."""
    arrays = 2 + len(rule.state)
    views = [f"A[r[{i}]:r[{i}] + size]" for i in range(1, 1 + arrays)]
    scalar_options = len(rule.scalar_options)
    base = 1 + SCHEDULE_OPTIONS
    consts = len(params) - arrays - 3 - len(rule.scalar_names)
    body = [f"size = r[{1 + arrays}]", f"sumsq = A[r[{2 + arrays}]] if r[{2 + arrays}] >= 0 else f32(0.0)",
            f"rate = scale * schedule(r[{3 + arrays}], step, f[0], f[1], f[2], f[3])"]
    scalars = []
    if rule.scalars is not None:
        opts = "".join(f", f[{base + i}]" for i in range(scalar_options))
        body.append(f"sc = scalars_{rule.name}(step, rate{opts})")
        scalars = [f"sc[{i}]" for i in range(len(rule.scalar_names))]
    options = [f"f[{base + scalar_options + i}]" for i in range(consts)]
    return body + [f"{name}({', '.join(views + ['size', 'sumsq', 'rate'] + scalars + options)})"]


def _schedule_source() -> str:
    lines = ["@njit(**JIT)", "def schedule(kind, step, lr, o0, o1, o2):"]
    for i, kind in enumerate(SCHEDULES):
        count = len(inspect.signature(SCHEDULE_FUNCTIONS[kind]).parameters) - 2
        args = ", ".join(["step", "lr"] + [f"o{j}" for j in range(count)])
        lines += [f"    if kind == {i}:", f"        return schedule_{kind}({args})"]
    lines.append("    return lr")
    return "\n".join(lines)
