"""The registry of primitives: what a primitive is, and the table every stage reads.

`primitives.py` (linear algebra, structure, activations, the catalog's formulas)
and `image_primitives.py` (convolution, pooling, normalization) register into
`PRIMITIVES`; the builder, autodiff and every target read it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from modelc.compiler.ir import BATCH, F32
from modelc.compiler.limits import LimitError, check_elements


class ShapeError(Exception):
    """Inputs of the wrong shape or type for a primitive (reported at the spec line)."""


@dataclass
class Primitive:
    name: str
    rule: Callable[[list, dict], list]           # the shape rule: input types -> output types
    impl: Callable[..., Any]
    vjp: Callable | None = None
    doc: str = ""
    # formulas of the catalog: "row" (per-sample values), "row_grad" or "update", and
    # formula(attrs) -> the RowRule / UpdateRule every target generates its code from
    kind: str = ""
    formula: Callable[[dict], Any] | None = None
    defaults: dict = field(default_factory=dict)     # the catalog's option defaults
    # whether the reference takes `first_row`: where the batch's rows start in the global batch
    # (a data-parallel process's share starts past row 0), so a value keyed by the sample's
    # index (a dropout mask) is the same however the batch is shared out
    by_row: bool = False

    def infer(self, types: list, attrs: dict) -> list:
        """The output types; a ShapeError for inputs that do not fit, or an output over
        `limits.MAX_ELEMENTS` per sample (counted exactly, so no size ever wraps)."""
        out = self.rule(types, attrs)
        for _, shape in out:
            per_sample = shape[1:] if shape and shape[0] == BATCH else shape
            try:
                check_elements(per_sample, f"{self.name}'s output {fmt_shape(shape)}", "values per sample")
            except LimitError as err:
                raise ShapeError(f"{err}; make the layer smaller") from None
        return out

    def options(self, attrs: dict) -> dict:
        """An op's attributes with every option the op leaves out at its default."""
        return {**self.defaults, **attrs}


PRIMITIVES: dict[str, Primitive] = {}


def primitive(name: str, infer, vjp=None, doc="", by_row=False):
    def register(impl):
        PRIMITIVES[name] = Primitive(name, infer, impl, vjp, doc or (impl.__doc__ or ""), by_row=by_row)
        return impl
    return register


def require_float(t, what):
    if t[0] != F32:
        raise ShapeError(f"{what} must be float, got {t[0]}")


def fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
