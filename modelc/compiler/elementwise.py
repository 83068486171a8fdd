"""Elementwise activations, each written once as a scalar expression (see `expr`).

An activation's expression reads `x` (the input), `y` (the output, for
derivatives) and its parameters. The numpy target evaluates it over arrays; the
cpu and cuda targets emit it into generated scalar code. Adding an activation is
one entry in `ACTIVATIONS`; the tests enumerate it.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Activation:
    name: str
    forward: str                 # y as a function of x
    derivative: str              # dy/dx as a function of x and y
    params: dict[str, float] = field(default_factory=dict)   # name -> Keras default
    aliases: tuple[str, ...] = ()


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in [
    Activation("linear", "x", "one(x)", aliases=("identity", "none")),
    Activation("relu", "where(x > 0, x, zero(x))", "where(x > 0, one(x), zero(x))"),
    Activation("sigmoid", "sigmoid(x)", "y * (1 - y)"),
    Activation("tanh", "tanh(x)", "1 - y * y"),
    Activation("leaky_relu", "where(x > 0, x, negative_slope * x)",
               "where(x > 0, one(x), negative_slope + zero(x))", {"negative_slope": 0.2}),
    Activation("elu", "where(x > 0, x, alpha * expm1(x))", "where(x > 0, one(x), y + alpha)",
               {"alpha": 1.0}),
    Activation("selu", "1.0507009873554805 * where(x > 0, x, 1.6732632423543772 * expm1(x))",
               "where(x > 0, 1.0507009873554805 + zero(x), y + 1.7580993408473766)"),
    Activation("gelu", "0.5 * x * (1 + erf(x * 0.7071067811865476))",
               "0.5 * (1 + erf(x * 0.7071067811865476)) + x * 0.3989422804014327 * exp(-0.5 * x * x)"),
    Activation("softplus", "log1p(exp(-abs(x))) + maximum(x, zero(x))", "sigmoid(x)"),
    Activation("silu", "x * sigmoid(x)", "sigmoid(x) * (1 + x * (1 - sigmoid(x)))", aliases=("swish",)),
]}

ACTIVATION_ALIASES = {alias: a.name for a in ACTIVATIONS.values() for alias in a.aliases}


def resolve(name: str) -> Activation | None:
    return ACTIVATIONS.get(ACTIVATION_ALIASES.get(name, name))
