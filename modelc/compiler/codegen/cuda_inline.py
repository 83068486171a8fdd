"""The scalar helpers of `expr` (`sigmoid_scalar`, ...) inlined into kernel
source as statements.

numba.cuda compiles a device function for the *current* device's compute
capability when a kernel calls it, so kernels that call one cannot be compiled
to PTX on a machine without a GPU. `inline_helpers` therefore rewrites every
call of a helper in an expression: arguments bound to fresh variables, locals
renamed, `if ...: return` turned into if/else assigning the result.
"""
from __future__ import annotations

import ast as pyast
import copy

from modelc.compiler.codegen.cuda_plan import CudaCodegenError, indent
from modelc.compiler.expr import SCALAR_HELPERS_SOURCE

_HELPERS = {f.name: f for f in pyast.parse(SCALAR_HELPERS_SOURCE).body
            if isinstance(f, pyast.FunctionDef)}


class _Rename(pyast.NodeTransformer):
    def __init__(self, names: dict[str, str]):
        self.names = names

    def visit_Name(self, node):
        if node.id in self.names:
            return pyast.copy_location(pyast.Name(id=self.names[node.id], ctx=node.ctx), node)
        return node


def _sub(node, names) -> str:
    return pyast.unparse(_Rename(names).visit(copy.deepcopy(node)))


def _returns(stmts) -> bool:
    last = stmts[-1] if stmts else None
    return isinstance(last, pyast.Return) or (isinstance(last, pyast.If) and _returns(last.body)
                                              and _returns(last.orelse))


def _inline_body(stmts, names: dict[str, str], result: str) -> list[str]:
    out: list[str] = []
    for i, st in enumerate(stmts):
        if isinstance(st, pyast.Return):
            out.append(f"{result} = {_sub(st.value, names)}")
            return out
        if isinstance(st, pyast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], pyast.Name):
            out.append(f"{names[st.targets[0].id]} = {_sub(st.value, names)}")
        elif isinstance(st, pyast.If):
            then = _inline_body(st.body, names, result)
            if _returns(st.body):
                rest = _inline_body(list(st.orelse) + list(stmts[i + 1:]), names, result)
                return out + [f"if {_sub(st.test, names)}:"] + indent(then) + ["else:"] + indent(rest)
            other = _inline_body(st.orelse, names, result) if st.orelse else ["pass"]
            out += [f"if {_sub(st.test, names)}:"] + indent(then) + ["else:"] + indent(other)
        else:
            raise CudaCodegenError(f"cannot inline a '{type(st).__name__}' statement of a scalar helper")
    return out


def inline_helpers(k, expr: str) -> tuple[list[str], str]:
    """(statements, expression) for a scalar expression that may call helpers.
    `k` names the fresh variables: anything with `tmp(prefix) -> str` (a
    `cuda_emit.KernelBuilder`)."""
    lines: list[str] = []

    class _Inline(pyast.NodeTransformer):
        def visit_Call(self, node):
            self.generic_visit(node)
            if isinstance(node.func, pyast.Name) and node.func.id in _HELPERS:
                fn = _HELPERS[node.func.id]
                names = {}
                for param, arg in zip(fn.args.args, node.args):
                    names[param.arg] = k.tmp("h" + param.arg)
                    lines.append(f"{names[param.arg]} = {pyast.unparse(arg)}")
                for sub in pyast.walk(fn):
                    if isinstance(sub, pyast.Name) and isinstance(sub.ctx, pyast.Store) and sub.id not in names:
                        names[sub.id] = k.tmp("h" + sub.id)
                result = k.tmp("h")
                lines.extend(_inline_body(fn.body, names, result))
                return pyast.Name(id=result, ctx=pyast.Load())
            return node

    tree = _Inline().visit(pyast.parse(expr, mode="eval"))
    return lines, pyast.unparse(tree)
