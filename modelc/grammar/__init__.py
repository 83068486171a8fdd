"""The `.model` language: `parse(text)` and `parse_file(path)` give an `ast.Spec`.

The parser is imported lazily: `modelc.errors` imports `modelc.grammar.ast`,
and the parser imports `modelc.errors`, so an eager import here would be a cycle.
"""
from __future__ import annotations

__all__ = ["parse", "parse_file"]


def __getattr__(name: str):
    if name in __all__:
        from modelc.grammar import parser
        return getattr(parser, name)
    raise AttributeError(f"module 'modelc.grammar' has no attribute {name!r}")
