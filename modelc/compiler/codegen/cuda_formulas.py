"""The cuda target's code for the catalog's formulas, generated from them: a row rule
(loss, loss gradient, metric) becomes the statements of a row kernel, an update
rule (optimizer) the per-element statements of the all-parameters update kernel.
Nothing here names a loss or an optimizer.

What the rest of the cuda codegen uses from this module:

  ROW_LOWERINGS: dict[str, Callable[[RowBuilder, Op], None]]
      primitive name -> `emit(rb, op)` for every row-rule primitive; `cuda_rules`
      registers each with geometry "sample" (the row is one sample of the
      prediction `op.inputs[1]`). Inputs follow `primitives`: (y, p), or (y, p, g)
      for a gradient, g the per-sample upstream gradient.
  UPDATES: dict[str, UpdateLowering]
      update primitive name -> UpdateLowering(lines, scalar_names, scalars):
      `lines(attrs, names)` updates element `names["j"]` of `names["w"]` from
      `names["g"]` and the state arrays `names["s0"]`, ... (and, for norm clipping,
      the sum of squares `names["sumsq"]`); `scalar_names` are
      its float32 per-step kernel arguments, and `scalars(step, attrs, lr_scale)` computes
      them on the host (`formulas.step_scalars`, rounded to float32).

Row statistics are reduced across the lanes of a row with the builder's shared
memory; one computed in a kernel is reused by every later op of the kernel that
needs the same statistic of the same values (a loss and its gradient).
Options are folded into float32 constants (`expr.fold`), so each kernel is
specialised to its spec's values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from modelc.compiler import expr
from modelc.compiler.codegen.cuda_emit import RowBuilder
from modelc.compiler.codegen.cuda_inline import inline_helpers
from modelc.compiler.codegen.cuda_plan import CudaCodegenError, lit
from modelc.compiler.formulas import RowRule, UpdateRule, step_scalars
from modelc.compiler.ir import I64, Op
from modelc.compiler.primitives import PRIMITIVES


# ---------------------------------------------------------------- row rules

class _Row:
    """One row-rule op inside a row kernel: reads of y, p, j and K, and its statistics."""

    def __init__(self, rb: RowBuilder, op: Op, rule: RowRule):
        self.rb, self.op, self.rule = rb, op, rule
        self.attrs = rule.constants(PRIMITIVES[op.prim].options(op.attrs))
        y, p = op.inputs[0], op.inputs[1]
        self.labels = y.dtype == I64
        self.label = rb.s(y) if self.labels else None
        self.key = (rb.k.p.base(y).id, rb.k.p.base(p).id)
        self.names: dict[str, str] = {"j": "c", "K": lit(float(rb.C))}
        if self.labels:
            self.names["label"] = self.label

    def element(self, expression: str) -> tuple[list[str], str]:
        """Statements loading what `expression` reads at column c, and its source."""
        folded = expr.fold(self.rule.expand(expression), self.attrs)
        used = expr.names(folded)
        lines, names = [], dict(self.names)
        y, p = self.op.inputs[0], self.op.inputs[1]
        if "y" in used:
            var = self.rb.tmp("y")
            lines.append(f"{var} = f32(1.0) if c == {self.label} else f32(0.0)" if self.labels
                         else f"{var} = {self.rb.x(y)}")
            names["y"] = var
        if "p" in used:
            var = self.rb.tmp("p")
            lines.append(f"{var} = {self.rb.x(p)}")
            names["p"] = var
        more, source = inline_helpers(self.rb, expr.to_scalar_source(folded, names))
        return lines + more, source

    def row(self, expression: str) -> str:
        """Source of a per-row expression (statistics, K, the label)."""
        folded = expr.fold(self.rule.expand(expression), self.attrs)
        more, source = inline_helpers(self.rb, expr.to_scalar_source(folded, self.names))
        self.rb.lines.extend(more)
        return source

    def statistic(self, stat) -> None:
        rb = self.rb
        folded = expr.fold(self.rule.expand(stat.expression), self.attrs)
        reads = expr.names(folded)
        memo_key = ("formula", stat.how, folded, self.key,
                    tuple(sorted((k, v) for k, v in self.names.items() if k in reads)))
        if memo_key in rb.memo:
            self.names[stat.name] = rb.memo[memo_key]
            return
        if stat.how == "let":
            var = rb.scalar(self.row(stat.expression))
        elif stat.how == "sum":
            pre, source = self.element(stat.expression)
            var = rb.row_sum(lambda: pre, source)
        elif stat.how == "max":
            pre, source = self.element(stat.expression)
            acc = rb.init("f32(-math.inf)", "mx")
            rb.loop(pre + [f"{acc} = max({acc}, {source})"])
            var = rb.reduce(acc, "max")
        elif stat.how == "argmax":
            pre, source = self.element(stat.expression)
            var = rb.argmax_of(pre, source)
        else:
            raise CudaCodegenError(f"a row statistic of kind {stat.how}")
        rb.memo[memo_key] = var
        self.names[stat.name] = var


def _row_value(rb: RowBuilder, op: Op):
    rule = PRIMITIVES[op.prim].formula(op.attrs)
    row = _Row(rb, op, rule)
    for stat in rule.needed([rule.value]):
        row.statistic(stat)
    rb.set_scalar(op.out, rb.scalar(row.row(rule.value)))


def _row_grad(rb: RowBuilder, op: Op):
    rule = PRIMITIVES[op.prim].formula(op.attrs)
    row = _Row(rb, op, rule)
    for stat in rule.needed([rule.grad], rule.grad_stats):
        row.statistic(stat)
    g = rb.s(op.inputs[2])
    pre, source = row.element(rule.grad)
    rb.loop(pre + [rb.store(op.out, f"{g} * ({source})")])


ROW_LOWERINGS: dict[str, Callable[[RowBuilder, Op], None]] = {
    name: (_row_grad if prim.kind == "row_grad" else _row_value)
    for name, prim in PRIMITIVES.items() if prim.kind in ("row", "row_grad")
}


# ---------------------------------------------------------------- update rules

@dataclass(frozen=True)
class UpdateLowering:
    lines: Callable[[dict, dict], list[str]]
    scalar_names: tuple[str, ...]
    scalars: Callable[[int, dict], tuple]


def _update_lowering(rule: UpdateRule) -> UpdateLowering:
    scalar_names = ("lr",) + rule.scalar_names
    options = PRIMITIVES[rule.name].options

    def lines(attrs: dict, names: dict) -> list[str]:
        attrs = options(attrs)
        j = names["j"]
        env = {name: names[name] for name in scalar_names}
        env["sumsq"] = names.get("sumsq", "f32(0.0)")     # read by norm clipping only
        out = [f"u_w = {names['w']}[{j}]", f"u_g = {names['g']}[{j}]"]
        env.update(w="u_w", g="u_g")
        for q, state in enumerate(rule.state):
            out.append(f"u_{state} = {names[f's{q}']}[{j}]")
            env[state] = f"u_{state}"
        for target, expression in rule.folded_body(attrs):
            env.setdefault(target, f"u_{target}")
            out.append(f"{env[target]} = {expr.to_scalar_source(expression, env)}")
        out.append(f"{names['w']}[{j}] = u_w")
        out += [f"{names[f's{q}']}[{j}] = u_{state}" for q, state in enumerate(rule.state)]
        return out

    def scalars(step: int, attrs: dict, lr_scale: float) -> tuple:
        values = step_scalars(rule, step, options(attrs), lr_scale)
        return tuple(np.float32(values[name]) for name in scalar_names)

    return UpdateLowering(lines, scalar_names, scalars)


UPDATES: dict[str, UpdateLowering] = {
    name: _update_lowering(prim.formula({})) for name, prim in PRIMITIVES.items() if prim.kind == "update"
}
