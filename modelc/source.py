"""Where things are in a spec: its text and file name, and positions in it. The lowest
layer: the AST, the errors and the IR all point into the user's file with these."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pos:
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None


NOWHERE = Pos(0, 0)


@dataclass(frozen=True)
class Source:
    """The spec's text and its file name, kept for error messages."""
    text: str
    filename: str = "<spec>"

    def line(self, number: int) -> str:
        lines = self.text.splitlines()
        return lines[number - 1] if 1 <= number <= len(lines) else ""
