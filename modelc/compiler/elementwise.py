"""Elementwise activations, each written once as a scalar expression.

An expression is a small Python expression over `x` (the input), `y` (the
output, for derivatives) and the activation's parameters, using only the
functions in `FUNCTIONS`. The numpy target evaluates it over arrays; the cpu
and cuda targets emit it into generated scalar code (see `to_scalar_source`).
Adding an activation is one entry in `ACTIVATIONS`; the tests enumerate it.
"""
from __future__ import annotations

import ast as pyast
import math
from dataclasses import dataclass, field

import numpy as np

try:  # the exact gelu needs erf; numpy has none, scipy does (numba needs scipy for BLAS anyway)
    from scipy.special import erf as _np_erf
except ImportError:  # pragma: no cover - scipy is a dependency
    _np_erf = np.vectorize(math.erf, otypes=[np.float64])


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

# Functions an expression may use, as numpy array functions. Scalar targets
# provide the same names (see `SCALAR_FUNCTIONS`).
def _sigmoid(x):
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.result_type(x), copy=False)


FUNCTIONS = {
    "exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1, "tanh": np.tanh,
    "sqrt": np.sqrt, "abs": np.abs, "where": np.where, "maximum": np.maximum, "minimum": np.minimum,
    "sigmoid": _sigmoid,
    "erf": lambda x: _np_erf(x).astype(np.result_type(x), copy=False),
    "zero": np.zeros_like, "one": np.ones_like,
}

# The scalar versions, as source for generated code. `where` becomes a
# conditional expression; numbers become float32 constants.
SCALAR_FUNCTIONS = {
    "exp": "math.exp", "log": "math.log", "log1p": "math.log1p", "expm1": "math.expm1",
    "tanh": "math.tanh", "sqrt": "math.sqrt", "abs": "abs", "erf": "math.erf",
    "maximum": "max", "minimum": "min",
}


def evaluate(expression: str, env: dict) -> np.ndarray:
    """Evaluate one of our own expressions (never user text) over arrays."""
    dtype = np.result_type(env["x"])
    scope = dict(FUNCTIONS)
    scope.update({k: (v if isinstance(v, np.ndarray) else dtype.type(v)) for k, v in env.items()})
    with np.errstate(over="ignore", invalid="ignore"):
        out = eval(compile(expression, "<activation>", "eval"), {"__builtins__": {}}, scope)
    return np.asarray(out, dtype=dtype)


class _ToScalar(pyast.NodeTransformer):
    def __init__(self, names: dict[str, str], const: str):
        self.names, self.const = names, const

    def visit_Call(self, node):
        self.generic_visit(node)
        fname = node.func.id
        if fname == "where":
            cond, a, b = node.args
            return pyast.IfExp(test=cond, body=a, orelse=b)
        if fname in ("zero", "one"):
            return self._number(0.0 if fname == "zero" else 1.0)
        if fname == "sigmoid":  # stable in float32 for both signs
            node.func = pyast.Name(id="sigmoid_scalar", ctx=pyast.Load())
            return node
        node.func = pyast.parse(SCALAR_FUNCTIONS[fname], mode="eval").body
        return node

    def visit_Name(self, node):
        if node.id in self.names:
            return pyast.parse(self.names[node.id], mode="eval").body
        return node

    def _number(self, value: float):
        return pyast.Call(func=pyast.Name(id=self.const, ctx=pyast.Load()),
                          args=[pyast.Constant(value=float(value))], keywords=[])

    def visit_Constant(self, node):
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return self._number(node.value)
        return node


def to_scalar_source(expression: str, names: dict[str, str], const: str = "f32") -> str:
    """Source of `expression` for a scalar target: variables renamed by `names`
    (parameters map to their float literal), numbers wrapped in `const(...)`."""
    tree = pyast.parse(expression, mode="eval")
    tree = _ToScalar(names, const).visit(tree)
    pyast.fix_missing_locations(tree)
    return pyast.unparse(tree)


SCALAR_HELPERS_SOURCE = '''
def sigmoid_scalar(x):
    if x >= 0:
        return f32(1.0) / (f32(1.0) + math.exp(-x))
    e = math.exp(x)
    return e / (f32(1.0) + e)
'''


def resolve(name: str) -> Activation | None:
    return ACTIVATIONS.get(ACTIVATION_ALIASES.get(name, name))
