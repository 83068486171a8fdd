"""The cpu target's code for the catalog's formulas, generated: one Numba kernel per
row rule (losses, metrics and their gradients, for float or integer-label targets)
and per update rule (optimizers), generic over sizes, with the options passed as
float64 arguments — so a kernel's source depends only on its formula, and every
spec that uses a formula shares it (Numba caches it on disk).

`kernels_source(names)` is the source of the named kernels (with the helpers they
need), `kernel_names(graph)` the kernels a graph uses, and `lower_call(op, names)`
the driver's lines that call an op's kernel. A formula's options become kernel
arguments through `expr.parametrize`: every subexpression of options alone is
computed in float64 on the host, then rounded to float32 in the kernel.

Semantics are the NumPy reference's (`formulas.row_value`, `row_grad`,
`apply_update`): the same expressions in the same order, in float32.
"""
from __future__ import annotations

import math

from modelc.compiler import expr
from modelc.compiler.formulas import RowRule, UpdateRule
from modelc.compiler.ir import I64, Graph, Op
from modelc.compiler.primitives import PRIMITIVES

FORMULA_KINDS = ("row", "row_grad", "update")


def _is_formula(op: Op) -> bool:
    return PRIMITIVES[op.prim].kind in FORMULA_KINDS


def kernel_name(op: Op) -> str:
    prim = PRIMITIVES[op.prim]
    rule = prim.formula(op.attrs)
    if prim.kind == "update":
        return f"update_{rule.name}"
    mode = "labels" if op.inputs[0].dtype == I64 else "values"
    return f"{'grad' if prim.kind == 'row_grad' else 'row'}_{rule.name}_{mode}"


def kernel_names(graph: Graph) -> list[str]:
    return sorted({kernel_name(op) for op in graph.ops if _is_formula(op)} |
                  {"sum_squares" for op in graph.ops if op.prim == "sum_squares"})


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
    variables = {"w", "g", "sumsq", "lr", *rule.state, *rule.scalar_names, *(t for t, _ in rule.body)}
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


def kernels_source(names: list[str]) -> str:
    """The named kernels, and the njit-compiled per-step scalar functions of the optimizers."""
    parts = [_KERNELS[n][0] for n in names]
    for prim in PRIMITIVES.values():
        if prim.kind == "update" and f"update_{prim.name}" in names and prim.formula({}).scalars is not None:
            parts.append(f"scalars_{prim.name} = njit(**JIT)(_PRIMITIVES[{prim.name!r}].formula({{}}).scalars)")
    return "\n\n\n".join(parts)


def _constants(table: list[str], attrs: dict) -> list[str]:
    values = {k: float(v) for k, v in attrs.items() if isinstance(v, (int, float))}
    return [_number(expr.evaluate_constant(source, values)) for source in table]


def _number(value: float) -> str:
    """A float64 as source: finite numbers exactly, infinities and NaN by name."""
    if math.isnan(value):
        return "math.nan"
    if math.isinf(value):
        return "math.inf" if value > 0 else "-math.inf"
    return repr(value)


def lower_call(op: Op, v) -> list[str]:
    """The driver's lines for a formula op (or sum_squares), with `v` the driver's value names."""
    if op.prim == "sum_squares":
        (x,) = op.inputs
        return [f"{v.flat(op.out)}[0] = sum_squares({v.flat(x)}, {v.size(x)})"]
    prim = PRIMITIVES[op.prim]
    name = kernel_name(op)
    table = _KERNELS[name][1]
    attrs = prim.options(op.attrs)
    rule = prim.formula(attrs)
    if prim.kind == "update":
        w, g = op.inputs[:2]
        states = op.inputs[2:2 + len(rule.state)]
        step = op.inputs[2 + len(rule.state)]
        sumsq = f"{v.flat(op.inputs[-1])}[0]" if len(op.inputs) > len(rule.state) + 3 else "0.0"
        kind, *schedule = attrs.get("schedule", ("constant",))
        rate_args = ", ".join(_number(float(a)) for a in [attrs["lr"], *schedule])
        lines = [f"rate = schedule_{kind}({v(step)}, {rate_args})"]
        scalars = []
        if rule.scalars is not None:
            opts = ", ".join(_number(float(attrs[o])) for o in rule.scalar_options)
            lines.append(f"sc = scalars_{rule.name}({v(step)}, rate{', ' + opts if opts else ''})")
            scalars = [f"sc[{i}]" for i in range(len(rule.scalar_names))]
        args = [v.flat(w), v.flat(g), *(v.flat(s) for s in states), v.size(w), sumsq, "rate", *scalars,
                *_constants(table, attrs)]
        return lines + [f"{name}({', '.join(args)})"]
    y, p = op.inputs[0], op.inputs[1]
    rows, k = "n", p.sample_size()
    consts = _constants(table, {**dict(rule.internal), **attrs})
    mat = lambda value: (v(value) if value.rank == 2 else f"{v(value)}.reshape(({rows}, {k}))")  # noqa: E731
    ys = v(y) if y.dtype == I64 else mat(y)
    if prim.kind == "row_grad":
        args = [ys, mat(p), v(op.inputs[2]), mat(op.out), rows, str(k), *consts]
    else:
        args = [ys, mat(p), v(op.out), rows, str(k), *consts]
    return [f"{name}({', '.join(args)})"]
