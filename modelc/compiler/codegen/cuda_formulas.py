"""The loss, metric and optimizer formulas of the `cuda` target, as source.

Self-contained: everything here is a formula written through the builder
interface below; the planner and `cuda_rules` use only the two tables.

What the rest of the cuda codegen uses from this module:

  ROW_LOWERINGS: dict[str, Callable[[RowBuilder, Op], None]]
      primitive name -> `emit(rb, op)` for every loss, loss gradient and
      metric. Each is a row lowering over whole samples (`cuda_rules` registers
      it with geometry "sample": the row is one sample of `op.inputs[1]`, the
      prediction). Inputs follow `primitives`: (y, p) for a loss or metric,
      (y, p, g) for a loss gradient, g the per-sample upstream gradient; the
      output is a per-sample scalar (loss, metric) or a row like p (gradient).
  UPDATES: dict[str, UpdateLowering]
      optimizer primitive name -> UpdateLowering(lines, scalar_names, scalars):
        lines(attrs, names) -> list[str]: the statements updating element
            `names["j"]` of the parameter `names["w"]` from its gradient
            `names["g"]` and state arrays `names["s0"]`, `names["s1"]`, ...
            (the op's inputs are (w, g, *state, step)), reading the per-step
            scalars by their names in `names` too;
        scalar_names: tuple[str, ...], the float32 kernel arguments per step;
        scalars(step, attrs) -> tuple of np.float32, computed on the host
            (`cuda_plan.StepScalars`).
      The planner groups consecutive ops of one primitive with equal attrs
      into one kernel.

What the row lowerings use of `cuda_emit.RowBuilder` `rb`: `rb.C` (row
length), `rb.tmp(prefix)`, `rb.x(v, c="c")` (element c of the row),
`rb.s(v)` (a per-sample scalar input), `rb.scalar(expr)` (a per-row scalar),
`rb.loop(lines)` (over the lane's columns, `c`), `rb.row_sum(pre, expr)`,
`rb.store(v, expr)` (at column c), `rb.set_scalar(v, var)` (the op's
per-sample result), `rb.stats(v, T)` (row max and sum of exp),
`rb.softmax(v, T)` (at column c), `rb.argmax(v)`; and `inline_helpers(rb, expr)`
for expressions calling the `expr` scalar helpers. Generated source
is written with `f32(...)` literals (`lit`), `math.*` and `min`/`max`/`abs`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from modelc.compiler.catalog import EPSILON
from modelc.compiler.codegen.cuda_emit import RowBuilder
from modelc.compiler.codegen.cuda_inline import inline_helpers
from modelc.compiler.codegen.cuda_plan import lit
from modelc.compiler.formulas import learning_rate
from modelc.compiler.ir import Op


# ---------------------------------------------------------------- losses and metrics

def _count(rb: RowBuilder) -> str:
    return lit(float(rb.C))


def _per_sample_loss(rb: RowBuilder, op: Op, term: Callable[[str, str], tuple[list[str], str]], mean: bool):
    """sum (or mean) over the sample of term(y_c, p_c)."""
    y, p = op.inputs[0], op.inputs[1]
    yv, pv = rb.tmp("y"), rb.tmp("p")
    pre, value = term(yv, pv)
    total = rb.row_sum(lambda: [f"{yv} = {rb.x(y)}", f"{pv} = {rb.x(p)}"] + pre, value)
    rb.set_scalar(op.out, rb.scalar(f"{total} / {_count(rb)}" if mean else total))


def _loss_grad(rb: RowBuilder, op: Op, term: Callable[[str, str, str], tuple[list[str], str]]):
    """out_c = term(y_c, p_c, g) for a per-sample gradient g."""
    y, p, g = op.inputs
    gv = rb.s(g)
    yv, pv = rb.tmp("y"), rb.tmp("p")
    pre, value = term(yv, pv, gv)
    rb.loop([f"{yv} = {rb.x(y)}", f"{pv} = {rb.x(p)}"] + pre + [rb.store(op.out, value)])


_EPS = lit(EPSILON)
_ONE_EPS = lit(1 - EPSILON)


def _clip(v: str, lo: str, hi: str) -> str:
    return f"min(max({v}, {lo}), {hi})"


def _row_mse(rb, op):
    _per_sample_loss(rb, op, lambda y, p: ([], f"({p} - {y}) * ({p} - {y})"), True)


def _row_mse_grad(rb, op):
    _loss_grad(rb, op, lambda y, p, g: ([], f"{g} * f32(2.0) * ({p} - {y}) / {_count(rb)}"))


def _sign(d: str) -> str:
    return f"(f32(1.0) if {d} > f32(0.0) else (f32(-1.0) if {d} < f32(0.0) else f32(0.0)))"


def _row_mae(rb, op):
    _per_sample_loss(rb, op, lambda y, p: ([], f"abs({p} - {y})"), True)


def _row_mae_grad(rb, op):
    _loss_grad(rb, op, lambda y, p, g: ([], f"{g} * {_sign(f'({p} - {y})')} / {_count(rb)}"))


def _row_huber(rb, op):
    d = lit(op.attrs.get("delta", 1.0))
    e = rb.tmp("e")
    _per_sample_loss(rb, op, lambda y, p: (
        [f"{e} = abs({p} - {y})"],
        f"(f32(0.5) * {e} * {e} if {e} <= {d} else {d} * {e} - f32(0.5) * {d} * {d})"), True)


def _row_huber_grad(rb, op):
    d = lit(op.attrs.get("delta", 1.0))
    _loss_grad(rb, op, lambda y, p, g: ([], f"{g} * {_clip(f'({p} - {y})', f'-{d}', d)} / {_count(rb)}"))


def _smooth_binary(y: str, ls: float) -> str:
    return f"({y} * {lit(1 - ls)} + {lit(0.5 * ls)})" if ls else y


def _row_bce(rb, op):
    ls = op.attrs.get("label_smoothing", 0.0)
    q = rb.tmp("q")
    if op.attrs.get("from_logits"):
        term = lambda y, p: ([], f"(max({p}, f32(0.0)) - {p} * {_smooth_binary(y, ls)} "
                                 f"+ math.log1p(math.exp(-abs({p}))))")
    else:
        def term(y, p):
            ys = _smooth_binary(y, ls)
            return ([f"{q} = {_clip(p, _EPS, _ONE_EPS)}"],    # Keras: epsilon inside the logs too
                    f"-({ys} * math.log({q} + {_EPS}) + (f32(1.0) - {ys}) * math.log(f32(1.0) - {q} + {_EPS}))")
    _per_sample_loss(rb, op, term, True)


def _row_bce_grad(rb, op):
    ls = op.attrs.get("label_smoothing", 0.0)
    q, d = rb.tmp("q"), rb.tmp("d")
    if op.attrs.get("from_logits"):
        def term(y, p, g):
            lines, sig = inline_helpers(rb, f"sigmoid_scalar({p})")
            return lines + [f"{d} = {sig} - {_smooth_binary(y, ls)}"], f"{g} * {d} / {_count(rb)}"
    else:
        def term(y, p, g):
            ys = _smooth_binary(y, ls)
            return ([f"{q} = {_clip(p, _EPS, _ONE_EPS)}",
                     f"{d} = (f32(1.0) - {ys}) / (f32(1.0) - {q} + {_EPS}) - {ys} / ({q} + {_EPS}) "
                     f"if {p} > {_EPS} and {p} < {_ONE_EPS} else f32(0.0)"], f"{g} * {d} / {_count(rb)}")
    _loss_grad(rb, op, term)


def _categorical_target(rb: RowBuilder, op: Op, sparse: bool) -> tuple[Callable[[], str], str | None]:
    """The (smoothed) one-hot target at column c, and for sparse labels the label variable."""
    if sparse:
        lab = rb.s(op.inputs[0])
        return (lambda: f"(f32(1.0) if c == {lab} else f32(0.0))"), lab
    ls = op.attrs.get("label_smoothing", 0.0)
    y = op.inputs[0]
    if ls:
        return (lambda: f"({rb.x(y)} * {lit(1 - ls)} + {lit(ls / rb.C)})"), None
    return (lambda: rb.x(y)), None


def _row_cce(rb, op, sparse=False):
    p = op.inputs[1]
    t = op.attrs.get("temperature", 1.0)
    target, lab = _categorical_target(rb, op, sparse)
    if op.attrs.get("from_logits"):
        mx, se = rb.stats(p, t)
        lse = rb.scalar(f"math.log({se})")
        if sparse:   # -(onehot . log_softmax) is minus the label's log-probability
            pl = f"{rb.x(p, lab)} / {lit(t)}"
            loss = rb.scalar(f"-(({pl} - {mx}) - {lse}) if {lab} >= 0 and {lab} < {rb.C} else f32(0.0)")
        else:
            total = rb.row_sum(lambda: [], f"{target()} * (({rb.x(p)} / {lit(t)} - {mx}) - {lse})")
            loss = rb.scalar(f"-{total}")
    else:
        s = rb.row_sum(lambda: [], rb.x(p))
        if sparse:
            q = _clip(f"{rb.x(p, lab)} / {s}", _EPS, _ONE_EPS)
            loss = rb.scalar(f"-math.log({q}) if {lab} >= 0 and {lab} < {rb.C} else f32(0.0)")
        else:
            q = _clip(f"{rb.x(p)} / {s}", _EPS, _ONE_EPS)
            total = rb.row_sum(lambda: [], f"{target()} * math.log({q})")
            loss = rb.scalar(f"-{total}")
    rb.set_scalar(op.out, loss)


def _row_cce_grad(rb, op, sparse=False):
    p, g = op.inputs[1], op.inputs[2]
    t = op.attrs.get("temperature", 1.0)
    gv = rb.s(g)
    target, _ = _categorical_target(rb, op, sparse)
    if op.attrs.get("from_logits"):
        ysum = "f32(1.0)" if sparse else rb.row_sum(lambda: [], target())
        sm = rb.softmax(p, t)
        rb.loop([rb.store(op.out, f"{gv} * (({sm}) * {ysum} - {target()}) / {lit(t)}")])
        return
    s = rb.row_sum(lambda: [], rb.x(p))
    q, dq = rb.tmp("q"), rb.tmp("dq")
    body = [f"{q} = {rb.x(p)} / {s}",
            f"{dq} = -{target()} / {_clip(q, _EPS, 'f32(1.0)')} if {q} > {_EPS} and {q} < {_ONE_EPS} "
            f"else f32(0.0)"]
    dot = rb.row_sum(lambda: body, f"{dq} * {q}")
    rb.loop(body + [rb.store(op.out, f"{gv} * ({dq} - {dot}) / {s}")])


def _row_kld(rb, op):
    yc = rb.tmp("yc")
    _per_sample_loss(rb, op, lambda y, p: (
        [f"{yc} = {_clip(y, _EPS, 'f32(1.0)')}"],
        f"{yc} * math.log({yc} / {_clip(p, _EPS, 'f32(1.0)')})"), False)


def _row_kld_grad(rb, op):
    _loss_grad(rb, op, lambda y, p, g: (
        [], f"{g} * (-{_clip(y, _EPS, 'f32(1.0)')} / {_clip(p, _EPS, 'f32(1.0)')} "
            f"if {p} > {_EPS} and {p} < f32(1.0) else f32(0.0))"))


def _row_sparse_accuracy(rb, op):
    lab = rb.s(op.inputs[0])
    best = rb.argmax(op.inputs[1])
    rb.set_scalar(op.out, rb.scalar(f"f32(1.0) if {best} == {lab} else f32(0.0)"))


def _row_categorical_accuracy(rb, op):
    a = rb.argmax(op.inputs[1])
    b = rb.argmax(op.inputs[0])
    rb.set_scalar(op.out, rb.scalar(f"f32(1.0) if {a} == {b} else f32(0.0)"))


def _row_binary_accuracy(rb, op):
    thr = lit(op.attrs.get("threshold", 0.5))
    _per_sample_loss(rb, op, lambda y, p: (
        [], f"(f32(1.0) if (f32(1.0) if {p} > {thr} else f32(0.0)) == {y} else f32(0.0))"), True)


ROW_LOWERINGS: dict[str, Callable[[RowBuilder, Op], None]] = {
    "mean_squared_error": _row_mse,
    "mean_squared_error_grad": _row_mse_grad,
    "mean_absolute_error": _row_mae,
    "mean_absolute_error_grad": _row_mae_grad,
    "huber": _row_huber,
    "huber_grad": _row_huber_grad,
    "binary_crossentropy": _row_bce,
    "binary_crossentropy_grad": _row_bce_grad,
    "categorical_crossentropy": _row_cce,
    "categorical_crossentropy_grad": _row_cce_grad,
    "sparse_categorical_crossentropy": lambda rb, op: _row_cce(rb, op, True),
    "sparse_categorical_crossentropy_grad": lambda rb, op: _row_cce_grad(rb, op, True),
    "kl_divergence": _row_kld,
    "kl_divergence_grad": _row_kld_grad,
    "sparse_accuracy": _row_sparse_accuracy,
    "categorical_accuracy": _row_categorical_accuracy,
    "binary_accuracy": _row_binary_accuracy,
}


# ---------------------------------------------------------------- optimizer lowerings

@dataclass(frozen=True)
class UpdateLowering:
    """One optimizer: the statements updating element j of a parameter and its
    state (`lines(attrs, n)`, n naming the arrays, the index and the per-step
    scalars), the names of its per-step float32 scalars, and how the host
    computes them. The order of operations is the reference's, so float32
    rounding matches."""
    lines: Callable[[dict, dict], list[str]]
    scalar_names: tuple[str, ...]
    scalars: Callable[[int, dict], tuple]


def _sched(step, attrs):
    return learning_rate(step, attrs["lr"], tuple(attrs.get("schedule", ("constant",))))


def _sgd_lines(a, n):
    m = float(a.get("momentum", 0.0))
    body = ["gj = {g}[{j}]"]
    if m:
        body += [f"vj = {{s0}}[{{j}}] * {lit(m)}", "vj = vj - {lr} * gj", "{s0}[{j}] = vj"]
        body += [f"{{w}}[{{j}}] = {{w}}[{{j}}] + ({lit(m)} * vj - {{lr}} * gj)" if a.get("nesterov")
                 else "{w}[{j}] = {w}[{j}] + vj"]
    else:
        body += ["{w}[{j}] = {w}[{j}] - {lr} * gj"]
    return [b.format(**n) for b in body]


def _adam_lines(a, n, decay=False):
    b1, b2, eps = a.get("beta_1", 0.9), a.get("beta_2", 0.999), a.get("epsilon", 1e-7)
    body = ["{w}[{j}] = {w}[{j}] - {w}[{j}] * {decay}"] if decay else []
    body += ["gj = {g}[{j}]",
             f"mj = {{s0}}[{{j}}] + (gj - {{s0}}[{{j}}]) * {lit(1 - b1)}", "{s0}[{j}] = mj",
             f"vj = {{s1}}[{{j}}] + (gj * gj - {{s1}}[{{j}}]) * {lit(1 - b2)}", "{s1}[{j}] = vj",
             f"{{w}}[{{j}}] = {{w}}[{{j}}] - {{alpha}} * mj / (math.sqrt(vj) + {lit(eps)})"]
    return [b.format(**n) for b in body]


def _rmsprop_lines(a, n):
    rho, mom, eps = a.get("rho", 0.9), float(a.get("momentum", 0.0)), a.get("epsilon", 1e-7)
    body = ["gj = {g}[{j}]", f"vj = {{s0}}[{{j}}] * {lit(rho)}", f"vj = vj + {lit(1 - rho)} * gj * gj",
            "{s0}[{j}] = vj", f"inc = {{lr}} * gj / math.sqrt(vj + {lit(eps)})"]
    if mom:
        body += [f"bj = {{s1}}[{{j}}] * {lit(mom)}", "bj = bj + inc", "{s1}[{j}] = bj", "{w}[{j}] = {w}[{j}] - bj"]
    else:
        body += ["{w}[{j}] = {w}[{j}] - inc"]
    return [b.format(**n) for b in body]


def _adam_alpha(step, a):
    """Adam's step size with the bias correction folded in: float64 on the host, then float32."""
    k = step + 1
    rate = _sched(step, a)
    b1, b2 = a.get("beta_1", 0.9), a.get("beta_2", 0.999)
    return np.float32(rate * np.sqrt(1 - b2 ** k) / (1 - b1 ** k))


UPDATES: dict[str, UpdateLowering] = {
    "sgd_update": UpdateLowering(_sgd_lines, ("lr",), lambda s, a: (np.float32(_sched(s, a)),)),
    "adam_update": UpdateLowering(_adam_lines, ("alpha",), lambda s, a: (_adam_alpha(s, a),)),
    "adamw_update": UpdateLowering(lambda a, n: _adam_lines(a, n, decay=True), ("alpha", "decay"), lambda s, a: (
        _adam_alpha(s, a), np.float32(_sched(s, a) * a.get("weight_decay", 0.004)))),
    "rmsprop_update": UpdateLowering(_rmsprop_lines, ("lr",), lambda s, a: (np.float32(_sched(s, a)),)),
}
