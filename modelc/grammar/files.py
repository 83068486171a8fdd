"""Reading a spec file: a regular file of UTF-8 text of at most `MAX_SPEC_BYTES`, checked
before it is read (a directory, a FIFO or /dev/zero is refused, not read until memory
runs out), and never more read than the limit and one byte."""
from __future__ import annotations

import codecs
import os
from pathlib import Path

from modelc.compiler.limits import MAX_SPEC_BYTES
from modelc.errors import ModelcError, SpecError
from modelc.files import file_problem
from modelc.source import Pos, Source


def read_spec(path) -> tuple[str, str]:
    """The text of the spec at `path` and the file name to show; a `ModelcError` when it is
    missing, not a regular file, too large or unreadable, a located `SpecError` when it is
    not UTF-8."""
    path = Path(path)
    problem = file_problem(path)
    if problem == "not found":
        raise ModelcError(f"spec file '{path}' not found", hint=f"looked for {path.absolute()}")
    if problem == "is a directory":
        raise ModelcError(f"'{path}' is a directory, not a spec file", hint="name a .model file inside it")
    if problem is not None:
        raise ModelcError(f"spec file '{path}' {problem}", hint="specs are small text files; name a .model file")
    size = os.stat(path).st_size
    if size > MAX_SPEC_BYTES:
        raise _too_large(path, size)
    try:
        # O_NONBLOCK: should the path have become a FIFO since the check, opening it cannot hang
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise ModelcError(f"cannot read spec file '{path}': {e.strerror or e}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise _too_large(path, len(data))
    return _decode(data, str(path)), str(path)


def _too_large(path: Path, size: int) -> ModelcError:
    return ModelcError(f"spec file '{path}' is {size:,} bytes or more; specs are small text files of at most "
                       f"{MAX_SPEC_BYTES:,} bytes", hint="is this the right file?")


def _decode(data: bytes, filename: str) -> str:
    """UTF-8 text (a byte-order mark is dropped); bytes that are not UTF-8 are a SpecError at
    their line and column."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = data.rfind(b"\n", 0, e.start) + 1
        line = data[:e.start].count(b"\n") + 1
        column = len(data[line_start:e.start].decode("utf-8", errors="replace")) + 1
        shown = Source(data.decode("utf-8", errors="replace"), filename)
        raise SpecError(f"the spec is not UTF-8 text: byte 0x{data[e.start]:02x} at byte {e.start} "
                        f"({e.reason})", Pos(line, column, line, column + 1), shown,
                        hint="save the file as UTF-8") from None
