"""Row rules (losses and metrics) and update rules (optimizers): the shape of a
formula, and its NumPy reference semantics. The formulas themselves are entries
of the catalog; every target generates its code from the same entry.

A row rule computes one number per sample from the sample's target and
prediction, both seen as rows of K elements. It reads, per element, `y` (the
target; for integer labels the one-hot 0/1 of `j == label`), `p` (the
prediction), `j` (the column) and, per row, `K` and `label`. `where` names
per-element macros; `stats` are per-row statistics computed in order (`Sum`,
`Max`, `ArgMax` over the row, or `Let`, an expression of earlier statistics);
`value` is the per-sample result. For a loss, `grad` is d value / d p_j (an
element expression that may read every statistic, and `grad_stats`, more
statistics the gradient needs). Options (`delta`, `label_smoothing`, …) are
read by name.

An update rule changes one element of a parameter `w` and its state, given
its gradient `g`: `body` is a sequence of assignments, in order, to `w`, to a
state buffer or to a local name. Per-step scalars (the learning rate after the
schedule, bias corrections) come from `scalars`, plain scalar Python of the
step and the options, computed in float64: the numpy target calls it, the cpu
target compiles it with Numba and the cuda target calls it on the host.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from modelc.compiler import expr


def numbers(attrs: dict) -> dict[str, float]:
    """An op's numeric attributes (bools as 1/0) as floats: what a formula's expressions read."""
    return {k: float(v) for k, v in attrs.items() if isinstance(v, (int, float))}


# ---------------------------------------------------------------- row rules

@dataclass(frozen=True)
class Stat:
    name: str
    how: str          # sum | max | argmax | let
    expression: str


def Sum(name, expression):
    return Stat(name, "sum", expression)


def Max(name, expression):
    return Stat(name, "max", expression)


def ArgMax(name, expression):
    return Stat(name, "argmax", expression)


def Let(name, expression):
    return Stat(name, "let", expression)


@dataclass(frozen=True)
class RowRule:
    name: str
    value: str
    stats: tuple[Stat, ...] = ()
    grad: str | None = None
    grad_stats: tuple[Stat, ...] = ()
    where: tuple[tuple[str, str], ...] = ()      # per-element macros, in order
    internal: tuple[tuple[str, float], ...] = ()  # attributes the compiler sets (not user options)

    def expand(self, expression: str) -> str:
        return expr.substitute(expression, dict(self.where))

    def needed(self, roots: list[str], extra: tuple[Stat, ...] = ()) -> list[Stat]:
        """The statistics (in order) that the expressions `roots` read, directly or not."""
        stats = {s.name: s for s in self.stats + extra}
        want: set[str] = set()
        pending = [n for r in roots for n in expr.names(self.expand(r))]
        while pending:
            name = pending.pop()
            if name in stats and name not in want:
                want.add(name)
                pending.extend(expr.names(self.expand(stats[name].expression)))
        return [s for s in self.stats + extra if s.name in want]

    def constants(self, attrs: dict) -> dict[str, float]:
        """The options and internal attributes an expression of this rule may read."""
        return {**dict(self.internal), **numbers(attrs)}

    def folded(self, expression: str, attrs: dict) -> str:
        return expr.fold(self.expand(expression), self.constants(attrs))


def _rows(y, p, sparse: bool):
    """(y, p) as 2-D rows of K elements, and the per-row variables."""
    rows = p.reshape(p.shape[0], -1)
    k = rows.shape[1]
    env = {"p": rows, "j": np.arange(k)[None, :], "K": k}
    if sparse:
        labels = np.asarray(y).reshape(-1, 1)
        env["label"] = labels
        env["y"] = (env["j"] == labels).astype(p.dtype)
    else:
        env["y"] = y.reshape(rows.shape).astype(p.dtype, copy=False)
    return env


def _statistics(rule: RowRule, stats: list[Stat], env: dict, attrs: dict) -> None:
    for stat in stats:
        e = expr.evaluate(rule.folded(stat.expression, attrs), env, env["p"].dtype)
        e = np.broadcast_to(e, env["p"].shape) if stat.how != "let" else e
        if stat.how == "sum":
            env[stat.name] = e.sum(axis=-1, keepdims=True)
        elif stat.how == "max":
            env[stat.name] = e.max(axis=-1, keepdims=True)
        elif stat.how == "argmax":
            env[stat.name] = e.argmax(axis=-1, keepdims=True)
        else:
            env[stat.name] = e


def row_value(rule: RowRule, y, p, attrs: dict, sparse: bool) -> np.ndarray:
    """The per-sample values (B,): the reference semantics of a row rule."""
    env = _rows(y, p, sparse)
    _statistics(rule, rule.needed([rule.value]), env, attrs)
    out = expr.evaluate(rule.folded(rule.value, attrs), env, p.dtype)
    return np.broadcast_to(out, (p.shape[0], 1)).reshape(p.shape[0]).astype(p.dtype, copy=False)


def row_grad(rule: RowRule, y, p, g, attrs: dict, sparse: bool) -> np.ndarray:
    """g (B,) times d value / d p, shaped like p."""
    env = _rows(y, p, sparse)
    _statistics(rule, rule.needed([rule.grad], rule.grad_stats), env, attrs)
    d = expr.evaluate(rule.folded(rule.grad, attrs), env, p.dtype)
    out = g.reshape(-1, 1).astype(p.dtype, copy=False) * np.broadcast_to(d, env["p"].shape)
    return out.reshape(p.shape).astype(p.dtype, copy=False)


# ---------------------------------------------------------------- update rules

@dataclass(frozen=True)
class UpdateRule:
    name: str
    body: tuple[tuple[str, str], ...]            # (name, expression), in order
    state: tuple[str, ...] = ()
    scalars: Callable[..., tuple] | None = None   # (step, lr, *scalar_options) -> floats
    scalar_names: tuple[str, ...] = ()
    scalar_options: tuple[str, ...] = ()
    init: tuple[tuple[str, str], ...] = ()       # (state, the option holding its start value)

    @property
    def variables(self) -> set[str]:
        """The names a body reads that change per element or per step (never folded as options,
        though `lr` is also the option the schedule starts from)."""
        return {"w", "g", "sumsq", "lr", *self.state, *self.scalar_names, *(t for t, _ in self.body)}

    def folded_body(self, options: dict) -> list[tuple[str, str]]:
        consts = {k: v for k, v in numbers(options).items() if k not in self.variables}
        return [(target, expr.fold(e, consts)) for target, e in self.body]

    def initial(self, options: dict) -> dict[str, float]:
        """The start value of each state buffer (zero unless an option sets it)."""
        values = dict.fromkeys(self.state, 0.0)
        values.update({name: float(options[option]) for name, option in self.init})
        return values


# The runtime's factor on every update's learning rate (Keras's ReduceLROnPlateau): an argument
# of each run, never compiled in. The numpy target passes it to the update ops as the attribute
# LR_SCALE, a key no spec option can be (spec names are identifiers).
LR_SCALE = "#lr_scale"
LR_SCALE_DEFAULT = 1.0


def step_scalars(rule: UpdateRule, step: int, options: dict, lr_scale: float) -> dict[str, float]:
    """The per-step float64 scalars of an update: `lr` after the schedule times `lr_scale`,
    then the rule's own (which read that rate)."""
    rate = lr_scale * learning_rate(step, options["lr"], tuple(options.get("schedule", ("constant",))))
    values = {"lr": rate}
    if rule.scalars is not None:
        extra = rule.scalars(step, rate, *(float(options[n]) for n in rule.scalar_options))
        values.update(zip(rule.scalar_names, extra))
    return values


def apply_update(rule: UpdateRule, arrays: dict[str, np.ndarray], step: int, options: dict) -> None:
    """Run `rule` over whole arrays, in place: `arrays` holds w, g and the state (and any
    extra scalar inputs, such as a gradient norm); `options` may hold the run's LR_SCALE."""
    dtype = arrays["w"].dtype
    env = dict(arrays)
    scalars = step_scalars(rule, step, options, options.get(LR_SCALE, LR_SCALE_DEFAULT))
    env.update({k: dtype.type(v) for k, v in scalars.items()})
    for target, e in rule.folded_body(options):
        env[target] = expr.evaluate(e, env, dtype)
    for name in ("w",) + rule.state:
        arrays[name][...] = env[name]


# ---------------------------------------------------------------- learning-rate schedules
# Plain scalar Python with `math`: the numpy target calls these directly, the
# cpu target njit-compiles the same functions, the cuda target calls them on
# the host per step. Arguments after (step, lr) are catalog.SCHEDULES' options.

def _constant(step, lr):
    return lr


def _exponential_decay(step, lr, rate, steps, staircase):
    p = step / steps
    return lr * rate ** (math.floor(p) if staircase else p)


def _inverse_time_decay(step, lr, rate, steps, staircase):
    p = step / steps
    return lr / (1 + rate * (math.floor(p) if staircase else p))


def _cosine_decay(step, lr, steps, alpha):
    p = min(step, steps) / steps
    return lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * p)) + alpha)


SCHEDULE_FUNCTIONS = {
    "constant": _constant,
    "exponential_decay": _exponential_decay,
    "inverse_time_decay": _inverse_time_decay,
    "cosine_decay": _cosine_decay,
}


def learning_rate(step, lr, schedule=("constant",)):
    """The learning rate after `step` updates; `schedule` is (kind, *options)."""
    return SCHEDULE_FUNCTIONS[schedule[0]](step, lr, *schedule[1:])
