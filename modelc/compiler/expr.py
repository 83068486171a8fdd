"""The scalar expression language every formula is written in.

An expression is a small Python expression over named variables, numbers and
the functions in `FUNCTIONS`: comparisons, `&`/`|` for both-and/either-or, and
`where(cond, a, b)` for a choice. Activations, loss and metric rows and
optimizer updates are all written in it, once; each target turns the same
text into its own code:

* `evaluate` runs it over NumPy arrays (the numpy target, the ground truth);
* `to_scalar_source` rewrites it into scalar Python for Numba (the cpu target
  and the cuda kernels), numbers wrapped as float32 constants.

`fold` first replaces every subexpression that depends on options alone (such
as `1 - beta_1` or `0.5 * delta * delta`) by its value computed in float64,
as Keras computes Python-float hyperparameters before casting them to float32;
all targets then see the same float32 constant.
"""
from __future__ import annotations

import ast as pyast
import math
from functools import lru_cache

import numpy as np


def _sigmoid(x):
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.result_type(x), copy=False)


def _softplus(x):
    return (np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)).astype(np.result_type(x), copy=False)


_erf_ufunc = np.frompyfunc(math.erf, 1, 1)


def _erf(x):
    """math.erf over an array (scipy would cost ~0.6 s of import for this alone)."""
    dtype = np.result_type(x)
    return np.asarray(_erf_ufunc(np.asarray(x, np.float64)), dtype=np.float64).astype(dtype, copy=False)


def _sign(x):
    return np.sign(x)


def _clip(x, lo, hi):
    return np.minimum(np.maximum(x, lo), hi)


# The functions an expression may call, as NumPy array functions.
FUNCTIONS = {
    "exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1, "tanh": np.tanh,
    "sqrt": np.sqrt, "abs": np.abs, "where": np.where, "maximum": np.maximum, "minimum": np.minimum,
    "sigmoid": _sigmoid, "softplus": _softplus, "erf": _erf, "sign": _sign, "clip": _clip,
    "zero": np.zeros_like, "one": np.ones_like,
}

# Their scalar versions, for generated code (`where`, `clip`, `sign`, `zero` and
# `one` are rewritten into expressions; sigmoid and softplus call the helpers below).
SCALAR_FUNCTIONS = {
    "exp": "math.exp", "log": "math.log", "log1p": "math.log1p", "expm1": "math.expm1",
    "tanh": "math.tanh", "sqrt": "math.sqrt", "abs": "abs", "erf": "math.erf",
    "maximum": "max", "minimum": "min", "sigmoid": "sigmoid_scalar", "softplus": "softplus_scalar",
}

# Stable in float32 for both signs. Targets compile these once (the cuda target inlines them).
SCALAR_HELPERS_SOURCE = '''
def sigmoid_scalar(x):
    if x >= 0:
        return f32(1.0) / (f32(1.0) + math.exp(-x))
    e = math.exp(x)
    return e / (f32(1.0) + e)


def softplus_scalar(x):
    return math.log1p(math.exp(-abs(x))) + max(x, f32(0.0))
'''


@lru_cache(maxsize=None)
def parse(expression: str) -> pyast.Expression:
    """Parse one of our own expressions (never user text), checking it uses only the language."""
    tree = pyast.parse(expression, mode="eval")
    for node in pyast.walk(tree):
        if isinstance(node, pyast.Call):
            if not isinstance(node.func, pyast.Name) or node.func.id not in FUNCTIONS or node.keywords:
                raise ValueError(f"{expression!r}: unknown function {pyast.unparse(node.func)}")
        elif isinstance(node, pyast.Compare) and len(node.ops) != 1:
            raise ValueError(f"{expression!r}: write chained comparisons with &")
        elif isinstance(node, (pyast.Lambda, pyast.Attribute, pyast.Subscript, pyast.BoolOp,
                               pyast.IfExp, pyast.Starred, pyast.NamedExpr)):
            raise ValueError(f"{expression!r}: {type(node).__name__} is not part of the language")
    return tree


def names(expression: str) -> set[str]:
    """The variables an expression reads."""
    called = {n.func.id for n in pyast.walk(parse(expression)) if isinstance(n, pyast.Call)}
    return {n.id for n in pyast.walk(parse(expression)) if isinstance(n, pyast.Name)} - called


def substitute(expression: str, macros: dict[str, str]) -> str:
    """Replace each variable named in `macros` by its (parenthesised) expression, repeatedly,
    so a macro may use the macros before it."""
    return _substitute(expression, tuple(macros.items()))


@lru_cache(maxsize=4096)
def _substitute(expression: str, items: tuple) -> str:
    macros = dict(items)
    class Expand(pyast.NodeTransformer):
        def visit_Name(self, node):
            if node.id in macros:     # a fresh tree each time: unparse keeps state per node
                return pyast.parse(macros[node.id], mode="eval").body
            return node

    for _ in range(len(macros) + 1):
        parse(expression)

        new = pyast.unparse(Expand().visit(pyast.parse(expression, mode="eval")))
        if new == expression:
            return expression
        expression = new
    raise ValueError(f"macros refer to each other in a cycle: {sorted(macros)}")


def _evaluate64(tree, env: dict) -> float:
    """A constant subexpression in float64, with IEEE semantics (1/0 is inf), as on a device."""
    scope = dict(FUNCTIONS, **{k: np.float64(v) for k, v in env.items()})
    with np.errstate(all="ignore"):
        return float(eval(compile(tree, "<constant>", "eval"), {"__builtins__": {}}, scope))


def _constant(node, options) -> bool:
    """Whether a subexpression reads only numbers and the names in `options`."""
    if isinstance(node, pyast.Name):
        return node.id in options
    if isinstance(node, pyast.Constant):
        return True
    if isinstance(node, pyast.Call):
        return node.func.id not in ("where", "zero", "one") and all(_constant(a, options) for a in node.args)
    if isinstance(node, (pyast.BinOp, pyast.UnaryOp, pyast.Compare)):
        return all(_constant(c, options) for c in pyast.iter_child_nodes(node)
                   if not isinstance(c, (pyast.operator, pyast.unaryop, pyast.cmpop)))
    return False


def fold(expression: str, options: dict[str, float]) -> str:
    """`expression` with every subexpression that reads only numbers and `options` replaced
    by its float64 value (written exactly, so targets round it to float32 once), and each
    `where` whose condition is such a constant replaced by the branch it picks."""
    return _fold(expression, tuple(sorted((k, float(v)) for k, v in options.items())))


@lru_cache(maxsize=4096)
def _fold(expression: str, options: tuple) -> str:
    tree = pyast.parse(expression, mode="eval")
    values = dict(options)

    class Fold(pyast.NodeTransformer):
        def generic_visit(self, node):
            if isinstance(node, pyast.Call) and node.func.id == "where" and _constant(node.args[0], values):
                chosen = node.args[1] if _evaluate64(pyast.Expression(body=node.args[0]), values) else node.args[2]
                return self.visit(chosen)
            if isinstance(node, pyast.expr) and _constant(node, values) and not isinstance(node, pyast.Constant):
                value = _evaluate64(pyast.Expression(body=node), values)
                return pyast.copy_location(pyast.Constant(value=value), node)
            return super().generic_visit(node)

    return pyast.unparse(Fold().visit(tree))


def parametrize(expression: str, options: set[str], table: list[str]) -> str:
    """`expression` with each subexpression that reads only numbers and `options` (at least
    one of them) replaced by a parameter `c<i>`, where table[i] is its source; the table is
    shared by the expressions of one formula. Targets that compile a formula once for all
    option values (the cpu kernels) evaluate the table per op with `evaluate_constant`."""
    class Lift(pyast.NodeTransformer):
        def generic_visit(self, node):
            if (isinstance(node, pyast.expr) and not isinstance(node, pyast.Constant) and _constant(node, options)
                    and any(isinstance(n, pyast.Name) for n in pyast.walk(node))):
                source = pyast.unparse(node)
                if source not in table:
                    table.append(source)
                return pyast.copy_location(pyast.Name(id=f"c{table.index(source)}", ctx=pyast.Load()), node)
            return super().generic_visit(node)

    return pyast.unparse(Lift().visit(pyast.parse(fold(expression, {}), mode="eval")))


def evaluate_constant(source: str, options: dict[str, float]) -> float:
    """A parameter of `parametrize`, in float64."""
    return _evaluate64(pyast.parse(source, mode="eval"), {k: float(v) for k, v in options.items()})


def evaluate(expression: str, env: dict, dtype=None) -> np.ndarray:
    """Evaluate an expression over arrays; numbers and scalar variables take `dtype`
    (by default the dtype of the float arrays in `env`)."""
    if dtype is None:
        floats = [v for v in env.values() if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
        dtype = np.result_type(*floats) if floats else np.float64
    dtype = np.dtype(dtype)

    code = _numpy_code(expression)
    scope = dict(FUNCTIONS, _t=dtype.type)
    scope.update({k: (v if isinstance(v, np.ndarray) else dtype.type(v)) for k, v in env.items()})
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        out = eval(code, {"__builtins__": {}}, scope)
    out = np.asarray(out)
    return out if out.dtype.kind in "bi" else out.astype(dtype, copy=False)


class _Typed(pyast.NodeTransformer):
    """Numbers become `_t(number)`, so they take the evaluation's dtype."""

    def visit_Constant(self, node):
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return pyast.Call(func=pyast.Name(id="_t", ctx=pyast.Load()), args=[node], keywords=[])
        return node


@lru_cache(maxsize=4096)
def _numpy_code(expression: str):
    tree = pyast.fix_missing_locations(_Typed().visit(pyast.parse(expression, mode="eval")))
    return compile(tree, "<formula>", "eval")


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
        if fname == "clip":
            x, lo, hi = node.args
            inner = pyast.Call(func=pyast.Name(id="max", ctx=pyast.Load()), args=[x, lo], keywords=[])
            return pyast.Call(func=pyast.Name(id="min", ctx=pyast.Load()), args=[inner, hi], keywords=[])
        if fname == "sign":
            (x,) = node.args
            return pyast.IfExp(test=pyast.Compare(left=x, ops=[pyast.Gt()], comparators=[self._number(0.0)]),
                               body=self._number(1.0),
                               orelse=pyast.IfExp(test=pyast.Compare(left=x, ops=[pyast.Lt()],
                                                                     comparators=[self._number(0.0)]),
                                                  body=self._number(-1.0), orelse=self._number(0.0)))
        node.func = pyast.parse(SCALAR_FUNCTIONS[fname], mode="eval").body
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, (pyast.BitAnd, pyast.BitOr)):   # conditions: both / either
            return pyast.BoolOp(op=pyast.And() if isinstance(node.op, pyast.BitAnd) else pyast.Or(),
                                values=[node.left, node.right])
        return node

    def visit_Name(self, node):
        if node.id in self.names:
            return pyast.parse(self.names[node.id], mode="eval").body
        return node

    def _number(self, value: float):
        if math.isinf(value):
            text = "math.inf" if value > 0 else "-math.inf"
            return pyast.Call(func=pyast.Name(id=self.const, ctx=pyast.Load()),
                              args=[pyast.parse(text, mode="eval").body], keywords=[])
        if math.isnan(value):
            raise ValueError("a formula folded to NaN")
        return pyast.Call(func=pyast.Name(id=self.const, ctx=pyast.Load()),
                          args=[pyast.Constant(value=float(value))], keywords=[])

    def visit_Constant(self, node):
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return self._number(node.value)
        return node


def to_scalar_source(expression: str, names: dict[str, str], const: str = "f32") -> str:
    """Source of `expression` for a scalar target: variables renamed by `names`
    (a name may map to any source text), numbers wrapped in `const(...)`."""
    tree = pyast.parse(expression, mode="eval")
    tree = _ToScalar(names, const).visit(tree)
    pyast.fix_missing_locations(tree)
    return pyast.unparse(tree)
