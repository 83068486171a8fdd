"""The AST of a `.model` spec: small dataclasses that remember where they came from.

Every node carries a `Pos`, so that any later stage (shape inference, data
binding, expectation checks) can blame the exact spot in the user's file.
The parser builds these; nothing here knows about Lark.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from modelc.source import NOWHERE, Pos, Source


@dataclass
class Ident:
    name: str
    pos: Pos = NOWHERE


@dataclass
class Number:
    value: float | int          # int when written without '.', 'e' or '/'
    text: str                   # as written, e.g. "1/255"
    pos: Pos = NOWHERE


@dataclass
class Bool:
    value: bool
    pos: Pos = NOWHERE


@dataclass
class String:
    value: str
    pos: Pos = NOWHERE


@dataclass
class ListLit:
    items: list["Literal"]
    pos: Pos = NOWHERE


Literal = Union[Number, Bool, String, Ident, ListLit, "Call"]


@dataclass
class Arg:
    key: Ident | None           # None for a positional argument
    value: Literal
    pos: Pos = NOWHERE


@dataclass
class Call:
    """`name` or `name(arg, key=value, ...)`: a layer, loss, optimizer, data source."""
    name: Ident
    args: list[Arg] = field(default_factory=list)
    pos: Pos = NOWHERE

    @property
    def positional(self) -> list[Arg]:
        return [a for a in self.args if a.key is None]

    @property
    def keywords(self) -> list[Arg]:
        return [a for a in self.args if a.key is not None]


@dataclass
class TensorType:
    dtype: str                  # "f32" | "int" (aliases normalised by the parser: float32 -> f32, i32/int32 -> int)
    shape: tuple[int, ...]      # per sample; the batch axis is implicit
    pos: Pos = NOWHERE


@dataclass
class InputDecl:
    name: Ident
    type: TensorType
    pos: Pos = NOWHERE


@dataclass
class TargetDecl:
    """`target digit: int[] classes 10` (sparse) or `target y: f32[10] onehot`."""
    name: Ident
    type: TensorType
    classes: Number | None = None
    onehot: bool = False
    pos: Pos = NOWHERE


@dataclass
class Bind:
    """`=> name` inside or at the end of a chain: names the value so far."""
    name: Ident
    pos: Pos = NOWHERE


@dataclass
class Chain:
    """`a -> layer -> layer => b` or `(a, b) -> add -> relu => c`."""
    sources: list[Ident]
    links: list[Union[Call, Bind]]
    pos: Pos = NOWHERE


@dataclass
class Setting:
    """One line of the `train` section: `batch 32`, `data mnist(scale=1/255)`."""
    key: Ident
    value: Literal
    pos: Pos = NOWHERE


@dataclass
class Expectation:
    """`test.accuracy >= 0.97`."""
    split: Ident
    metric: Ident
    op: str                     # one of >=, >, <=, <, ==
    value: Number
    pos: Pos = NOWHERE


@dataclass
class Spec:
    name: Ident
    inputs: list[InputDecl]
    targets: list[TargetDecl]
    network: list[Chain]
    loss: Call | None
    optimizer: Call | None
    metrics: list[Call]
    train: list[Setting]
    expect: list[Expectation]
    source: Source
    pos: Pos = NOWHERE
