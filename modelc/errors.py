"""User-facing errors. A `SpecError` points at a spot in a spec; a `ModelcError`
is any other user mistake (missing data file, corrupt checkpoint). The CLI
prints either without a traceback and exits non-zero."""
from __future__ import annotations

import difflib
from typing import Iterable

from modelc.source import Pos, Source


class ModelcError(Exception):
    """A user mistake we can explain; `hint` says what to do about it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class SpecError(ModelcError):
    """A mistake at a known place in a spec."""

    def __init__(self, message: str, pos: Pos | None = None, source: Source | None = None,
                 hint: str | None = None):
        super().__init__(message, hint)
        self.pos = pos
        self.source = source

    @property
    def line(self) -> int | None:
        return self.pos.line if self.pos else None

    @property
    def column(self) -> int | None:
        return self.pos.column if self.pos else None

    def located(self, source: Source) -> "SpecError":
        """Attach the source if a later stage raised without it."""
        if self.source is None:
            self.source = source
        return self

    def __str__(self) -> str:
        filename = self.source.filename if self.source else "<spec>"
        if self.pos is None or self.pos.line == 0:
            head = f"{filename}: error: {self.message}"
            return head + (f"\n  hint: {self.hint}" if self.hint else "")
        head = f"{filename}:{self.pos.line}:{self.pos.column}: error: {self.message}"
        parts = [head]
        if self.source is not None:
            text = self.source.line(self.pos.line).rstrip("\n").expandtabs(1)
            width = 1
            if self.pos.end_line == self.pos.line and self.pos.end_column:
                width = max(1, self.pos.end_column - self.pos.column)
            gutter = f"{self.pos.line:>4} | "
            parts.append(gutter + text)
            parts.append(" " * (len(gutter) + self.pos.column - 1) + "^" * width)
        if self.hint:
            parts.append(f"  hint: {self.hint}")
        return "\n".join(parts)


def _edits(a: str, b: str) -> int:
    """Insertions, deletions, substitutions and swaps of neighbours that turn a into b."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """A close known name for a misspelt one, as a hint, or None: among the names difflib
    finds close, the fewest typing mistakes away (a swap of two letters is one)."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=5, cutoff=0.6)
    if not close:
        return None
    best = min(close, key=lambda c: (_edits(word, c), -difflib.SequenceMatcher(None, word, c).ratio()))
    return f"did you mean '{best}'?"


def unknown(kind: str, word: str, choices: Iterable[str], pos: Pos | None = None) -> SpecError:
    """`unknown activation 'rleu'; did you mean 'relu'?` with the list when no name is close."""
    choices = sorted(set(choices))
    suggestion = did_you_mean(word, choices)
    message = f"unknown {kind} '{word}'" + (f"; {suggestion}" if suggestion else "")
    hint = None if suggestion else f"known {kind}s: {', '.join(choices)}"
    return SpecError(message, pos, hint=hint)
