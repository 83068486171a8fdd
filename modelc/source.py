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

    def lines(self) -> list[str]:
        """The text's lines. A line ends at '\n' only, as the lexer counts them: a form feed,
        '\x85' or U+2028 in a comment is no line break (and '\r\n' ends a line too)."""
        lines = [line.removesuffix("\r") for line in self.text.split("\n")]
        if len(lines) > 1 and lines[-1] == "":
            lines.pop()             # the text's final newline starts no line
        return lines

    def line(self, number: int) -> str:
        lines = self.lines()
        return lines[number - 1] if 1 <= number <= len(lines) else ""
