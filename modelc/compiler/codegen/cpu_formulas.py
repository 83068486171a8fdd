"""The cpu target's code for the catalog's formulas, generated: one Numba kernel per
row rule (losses, metrics and their gradients, for float or integer-label targets)
and per update rule (optimizers), generic over sizes, with the options passed as
float64 arguments — so a kernel's source depends only on its formula, and every
spec that uses a formula shares it (Numba caches it on disk).

`KERNEL_NAMES` lists every kernel, `kernels_source(names)` is the source of the
named kernels (with the per-step scalar functions they need), and
`kernel_call(op)` says, as data, how an op calls its kernel. A formula's options
become kernel arguments through `expr.parametrize`: every subexpression of
options alone is computed in float64 on the host, then rounded to float32 in
the kernel.

Semantics are the NumPy reference's (`formulas.row_value`, `row_grad`,
`apply_update`): the same expressions in the same order, in float32.
"""
from __future__ import annotations

from dataclasses import dataclass

from modelc.compiler import expr
from modelc.compiler.formulas import RowRule, UpdateRule, numbers
from modelc.compiler.ir import I64, Op, Value
from modelc.compiler.primitives import PRIMITIVES

def kernel_name(op: Op) -> str:
    prim = PRIMITIVES[op.prim]
    rule = prim.formula(op.attrs)
    if prim.kind == "update":
        return f"update_{rule.name}"
    mode = "labels" if op.inputs[0].dtype == I64 else "values"
    return f"{'grad' if prim.kind == 'row_grad' else 'row'}_{rule.name}_{mode}"


# ---------------------------------------------------------------- row kernels

def _options(rule: RowRule, names: set[str]) -> set[str]:
    local = {s.name for s in rule.stats + rule.grad_stats} | {m for m, _ in rule.where}
    return names - local - {"y", "p", "j", "K", "label"}


def _row_kernel(rule: RowRule, grad: bool, labels: bool) -> tuple[str, list[str]]:
    """Source of one row kernel, and the table of its option parameters."""
    roots = [rule.grad] if grad else [rule.value]
    extra = rule.grad_stats if grad else ()
    stats = rule.needed(roots, extra)
    expressions = [rule.expand(s.expression) for s in stats] + [rule.expand(r) for r in roots]
    options = set().union(*(_options(rule, expr.names(e)) for e in expressions))
    table: list[str] = []
    lifted = [expr.parametrize(e, options, table) for e in expressions]
    body_of = dict(zip([s.name for s in stats] + ["<root>"], lifted))
    env = {"y": "yv", "p": "pv", "j": "j", "K": "kf", "label": "lab"}
    env.update({s.name: f"r_{s.name}" for s in stats})
    env.update({f"c{i}": f"k{i}" for i in range(len(table))})
    src = lambda e: expr.to_scalar_source(e, env)   # noqa: E731 - a local shorthand

    def element_loads(e: str) -> list[str]:
        used = expr.names(e)
        lines = []
        if "y" in used:
            lines.append("yv = f32(1.0) if j == lab else f32(0.0)" if labels else "yv = y[i, j]")
        if "p" in used:
            lines.append("pv = p[i, j]")
        return lines

    args = ["y", "p"] + (["g"] if grad else []) + ["out", "rows", "k"] + [f"a{i}" for i in range(len(table))]
    name = f"{'grad' if grad else 'row'}_{rule.name}_{'labels' if labels else 'values'}"
    lines = ["@njit(**JIT)", f"def {name}({', '.join(args)}):", "    kf = f32(k)"]
    lines += [f"    k{i} = f32(a{i})" for i in range(len(table))]
    lines.append("    for i in range(rows):")
    if labels:
        lines.append("        lab = y[i]")
    for stat in stats:
        e = body_of[stat.name]
        var = f"r_{stat.name}"
        if stat.how == "let":
            lines.append(f"        {var} = {src(e)}")
            continue
        if stat.how == "argmax":       # the first largest, as numpy's argmax
            lines += [f"        {var} = 0", "        best = f32(0.0)", "        for j in range(k):"]
            lines += [f"            {line}" for line in element_loads(e)]
            lines += [f"            t = {src(e)}", "            if j == 0 or t > best:",
                      "                best = t", f"                {var} = j"]
            continue
        start = "f32(0.0)" if stat.how == "sum" else "f32(-math.inf)"
        lines += [f"        {var} = {start}", "        for j in range(k):"]
        lines += [f"            {line}" for line in element_loads(e)]
        update = f"{var} + ({src(e)})" if stat.how == "sum" else f"max({var}, {src(e)})"
        lines.append(f"            {var} = {update}")
    root = body_of["<root>"]
    if grad:
        lines += ["        gi = g[i]", "        for j in range(k):"]
        lines += [f"            {line}" for line in element_loads(root)]
        lines.append(f"            out[i, j] = gi * ({src(root)})")
    else:
        lines.append(f"        out[i] = {src(root)}")
    return "\n".join(lines), table


# ---------------------------------------------------------------- update kernels

def _update_kernel(rule: UpdateRule) -> tuple[str, list[str]]:
    variables = rule.variables
    options = set().union(*(expr.names(e) for _, e in rule.body)) - variables
    table: list[str] = []
    body = [(target, expr.parametrize(e, options, table)) for target, e in rule.body]
    env = {name: f"x_{name}" for name in variables}
    env.update({f"c{i}": f"k{i}" for i in range(len(table))})
    states = [f"s{i}" for i in range(len(rule.state))]
    args = ["w", "g", *states, "size", "sumsq", "lr", *rule.scalar_names] + [f"a{i}" for i in range(len(table))]
    lines = ["@njit(**JIT)", f"def update_{rule.name}({', '.join(args)}):",
             "    x_sumsq = f32(sumsq)", "    x_lr = f32(lr)"]
    lines += [f"    x_{s} = f32({s})" for s in rule.scalar_names]
    lines += [f"    k{i} = f32(a{i})" for i in range(len(table))]
    lines += ["    for i in range(size):", "        x_w = w[i]", "        x_g = g[i]"]
    lines += [f"        x_{name} = {s}[i]" for name, s in zip(rule.state, states)]
    lines += [f"        {env[target]} = {expr.to_scalar_source(e, env)}" for target, e in body]
    lines.append("        w[i] = x_w")
    lines += [f"        {s}[i] = x_{name}" for name, s in zip(rule.state, states)]
    return "\n".join(lines), table


# ---------------------------------------------------------------- the module part and the calls

_SUM_SQUARES = '''@njit(**JIT)
def sum_squares(x, size):
    total = f32(0.0)
    for i in range(size):
        total += x[i] * x[i]
    return total'''


def _kernels() -> dict[str, tuple[str, list[str]]]:
    """Every formula kernel: name -> (source, option parameter table)."""
    out: dict[str, tuple[str, list[str]]] = {}
    rules: dict[str, tuple[RowRule, bool]] = {}
    for prim in PRIMITIVES.values():
        if prim.kind == "update":
            rule = prim.formula({})
            out[f"update_{rule.name}"] = _update_kernel(rule)
        elif prim.kind in ("row", "row_grad"):
            for attrs in ({}, {"from_logits": True}):
                rule = prim.formula(attrs)
                if rule is None:
                    continue
                rules[f"{'grad' if prim.kind == 'row_grad' else 'row'}_{rule.name}"] = (rule, prim.kind == "row_grad")
    for key, (rule, grad) in rules.items():
        for labels in (False, True):
            out[f"{key}_{'labels' if labels else 'values'}"] = _row_kernel(rule, grad, labels)
    out["sum_squares"] = (_SUM_SQUARES, [])
    return out


_KERNELS = _kernels()
KERNEL_NAMES = tuple(sorted(_KERNELS))


def kernels_source(names: list[str]) -> str:
    """The named kernels, and the njit-compiled per-step scalar functions of the optimizers."""
    parts = [_KERNELS[n][0] for n in names]
    for prim in PRIMITIVES.values():
        if prim.kind == "update" and f"update_{prim.name}" in names and prim.formula({}).scalars is not None:
            parts.append(f"scalars_{prim.name} = njit(**JIT)(_PRIMITIVES[{prim.name!r}].formula({{}}).scalars)")
    return "\n\n\n".join(parts)


def _constants(table: list[str], values: dict[str, float]) -> tuple[float, ...]:
    return tuple(expr.evaluate_constant(source, values) for source in table)


@dataclass(frozen=True)
class KernelCall:
    """How a formula op (or sum_squares) calls its kernel, as data: the kernel, the values it
    reads and writes (as flat or per-sample arrays, in the kernel's order), the whole-number
    sizes, and float64 arguments. For an update, also the schedule, its arguments (lr, then
    the schedule's options) and the options of the rule's per-step scalars, and the value
    holding the gradient's sum of squares (norm clipping) or None."""
    kernel: str
    values: tuple[Value, ...]
    sizes: tuple[int, ...]
    floats: tuple[float, ...]
    schedule: str | None = None
    schedule_args: tuple[float, ...] = ()
    scalar_options: tuple[float, ...] = ()
    sumsq: Value | None = None


def kernel_call(op: Op) -> KernelCall:
    """The call of `op`'s kernel: `row_*` kernels take (y, p, out, rows, k, *floats),
    `grad_*` (y, p, g, out, rows, k, *floats), `update_*` (w, g, *state, size, sumsq, lr,
    *per-step scalars, *floats), `sum_squares` (x, size) and returns the sum."""
    if op.prim == "sum_squares":
        (x,) = op.inputs
        return KernelCall("sum_squares", (x, op.out), (x.sample_size(),), ())
    prim = PRIMITIVES[op.prim]
    name = kernel_name(op)
    table = _KERNELS[name][1]
    attrs = prim.options(op.attrs)
    rule = prim.formula(attrs)
    if prim.kind == "update":
        state = op.inputs[2:2 + len(rule.state)]
        extra = op.inputs[3 + len(rule.state):]
        kind, *schedule = attrs.get("schedule", ("constant",))
        return KernelCall(name, (op.inputs[0], op.inputs[1], *state), (op.inputs[0].sample_size(),),
                          _constants(table, numbers(attrs)), kind, tuple(float(a) for a in [attrs["lr"], *schedule]),
                          tuple(float(attrs[o]) for o in rule.scalar_options), extra[0] if extra else None)
    values = op.inputs + op.outputs
    return KernelCall(name, tuple(values), (op.inputs[1].sample_size(),),
                      _constants(table, rule.constants(attrs)))
