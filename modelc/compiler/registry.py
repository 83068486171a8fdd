"""The registry of primitives: what a primitive is, and the table every stage reads.

`primitives.py` (linear algebra, structure, activations, the catalog's formulas)
and `image_primitives.py` (convolution, pooling, normalization) register into
`PRIMITIVES`; the builder, autodiff and every target read it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from modelc.compiler.ir import F32


class ShapeError(Exception):
    """Inputs of the wrong shape or type for a primitive (reported at the spec line)."""


@dataclass
class Primitive:
    name: str
    infer: Callable[[list, dict], list]
    impl: Callable[..., Any]
    vjp: Callable | None = None
    doc: str = ""
    # formulas of the catalog: "row" (per-sample values), "row_grad" or "update", and
    # formula(attrs) -> the RowRule / UpdateRule every target generates its code from
    kind: str = ""
    formula: Callable[[dict], Any] | None = None
    defaults: dict = field(default_factory=dict)     # the catalog's option defaults

    def options(self, attrs: dict) -> dict:
        """An op's attributes with every option the op leaves out at its default."""
        return {**self.defaults, **attrs}


PRIMITIVES: dict[str, Primitive] = {}


def primitive(name: str, infer, vjp=None, doc=""):
    def register(impl):
        PRIMITIVES[name] = Primitive(name, infer, impl, vjp, doc or (impl.__doc__ or ""))
        return impl
    return register


def require_float(t, what):
    if t[0] != F32:
        raise ShapeError(f"{what} must be float, got {t[0]}")


def fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
