"""The `.model` language: `parse(text)` and `parse_file(path)` give an `ast.Spec`."""
from __future__ import annotations

from modelc.grammar.parser import parse, parse_file

__all__ = ["parse", "parse_file"]
