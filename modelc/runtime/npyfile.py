"""Reading `.npy` and `.npz` files that may be damaged or hostile: an answer or a ModelcError,
never a crash, a hang or a surprise allocation.

Used by the checkpoints and by the npz data source. Before anything is
decompressed, the file must be a regular file (a FIFO would block forever),
a zip archive of `.npy` members only, whose uncompressed sizes in the zip
directory fit `modelc.arrays.check_size`; each member's `.npy` header is read
(bounded) and must describe exactly as many bytes as the directory says.
Only the members a caller asks for are read, each with a bound, so a
directory that lies cannot inflate past it. Nothing is ever unpickled.
"""
from __future__ import annotations

import ast
import math
import os
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from modelc.arrays import check_size
from modelc.errors import ModelcError
from modelc.files import file_problem

NPY_MAGIC = b"\x93NUMPY"
MAX_HEADER_BYTES = 10000          # numpy's own default limit for an .npy header
_CHUNK = 1 << 20


class NotAFile(ModelcError):
    """The path is missing, a directory, or not a regular file; `reason` is the short why."""

    def __init__(self, message: str, reason: str, hint: str | None = None):
        super().__init__(message, hint)
        self.reason = reason


def open_regular(path: Path, where: str) -> BinaryIO:
    """Open `path` for reading only if it is a regular file; a NotAFile error names `where` if not."""
    problem = file_problem(path)
    if problem is None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as e:
            raise ModelcError(f"cannot read {where}: {e.strerror or e}") from None
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return os.fdopen(fd, "rb")
        os.close(fd)                        # replaced since the check
        problem = file_problem(path) or "is not a regular file"
    raise NotAFile(f"{where} {problem}", problem,
                   None if problem == "not found" else "name a regular file on disk")


def describe_start(head: bytes) -> str:
    """What a file that is not a zip archive looks like, from its first bytes."""
    if not head:
        return "it is empty"
    if head.startswith(NPY_MAGIC):
        return "it holds a single array (.npy), not an archive of named arrays"
    if head[:1] == b"\x80" or head.startswith(b"(dp"):
        return "it looks like a pickle, which modelc never loads"
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip data"
    return f"it is not a zip archive (it starts with {head[:12]!r})"


@dataclass(frozen=True)
class Member:
    """One `.npy` member, from its zip entry and its checked header."""
    key: str              # the member's name without `.npy`
    info: zipfile.ZipInfo
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran: bool
    data_offset: int      # where the array bytes start inside the member

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _header(stream: BinaryIO, size: int, where: str) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """Parse an .npy header from `stream` (reading at most MAX_HEADER_BYTES)."""
    def bad(why: str) -> ModelcError:
        return ModelcError(f"{where}: not a valid .npy array ({why})")

    start = stream.read(8)
    if len(start) < 8 or not start.startswith(NPY_MAGIC):
        raise bad("no .npy magic at its start")
    major = start[6]
    if major not in (1, 2, 3):
        raise bad(f"unknown .npy format version {major}.{start[7]}")
    width = 2 if major == 1 else 4
    length = struct.unpack("<H" if width == 2 else "<I", stream.read(width).ljust(width, b"\0"))[0]
    if length > MAX_HEADER_BYTES:
        raise bad(f"its header claims {length} bytes, more than {MAX_HEADER_BYTES}")
    text = stream.read(length)
    if len(text) < length:
        raise bad("its header is cut short")
    try:
        header = ast.literal_eval(text.decode("utf-8" if major == 3 else "latin1"))
    except Exception:       # literal_eval of hostile text can raise almost anything
        raise bad("its header is not a Python literal") from None
    if not isinstance(header, dict) or set(header) != {"descr", "shape", "fortran_order"}:
        raise bad("its header lacks descr, shape or fortran_order")
    shape, fortran = header["shape"], header["fortran_order"]
    if (not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape)
            or not isinstance(fortran, bool)):
        raise bad(f"its header's shape {shape!r} or order {fortran!r} is malformed")
    try:
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except Exception:
        raise bad(f"its header's type {header['descr']!r} is not a NumPy type") from None
    offset = 8 + width + length
    # (an object array's bytes are a pickle, never read: only its header is checked)
    if not dtype.hasobject and offset + math.prod(shape) * dtype.itemsize != size:
        raise bad(f"its header promises shape {shape} of {dtype} ({math.prod(shape) * dtype.itemsize} bytes), "
                  f"but the zip entry holds {size - offset} bytes after the header")
    return dtype, shape, fortran, offset


class Archive:
    """An `.npz` file opened for careful reading: `members` maps each key to its checked header."""

    def __init__(self, path: Path, where: str, hint: str | None = None):
        self.where = where
        self._file = open_regular(path, where)
        try:
            head = self._file.read(16)
            self._file.seek(0)
            if not head.startswith(b"PK"):
                raise ModelcError(f"{where}: not a readable .npz file: {describe_start(head)}", hint)
            self.members = self._scan(hint)
        except BaseException:
            self.close()
            raise

    def _damaged(self, e: BaseException, hint: str | None) -> ModelcError:
        return ModelcError(f"{self.where}: not a readable .npz file: the archive is damaged "
                           f"({str(e) or type(e).__name__})", hint or "it may be truncated; write it again")

    def _scan(self, hint: str | None) -> dict[str, Member]:
        try:
            self._zip = zipfile.ZipFile(self._file)
            infos = self._zip.infolist()
        except Exception as e:      # a hostile zip directory can raise almost anything
            raise self._damaged(e, hint) from None
        names = [i.filename for i in infos]
        for info in infos:
            if not info.filename.endswith(".npy") or info.is_dir():
                raise ModelcError(f"{self.where}: member '{info.filename[:80]}' is not a .npy array",
                                  hint or "an .npz written by np.savez holds only .npy members")
            if names.count(info.filename) > 1:
                raise ModelcError(f"{self.where}: member '{info.filename[:80]}' appears twice", hint)
        check_size(sum(i.file_size for i in infos), f"{self.where}: unpacking it",
                   "this is not a file modelc wrote or can hold; check the file")
        members = {}
        for info in infos:
            key = info.filename[:-len(".npy")]
            where = f"{self.where}: member '{key}'"
            try:
                with self._zip.open(info) as stream:
                    dtype, shape, fortran, offset = _header(stream, info.file_size, where)
            except ModelcError:
                raise
            except Exception as e:
                raise self._damaged(e, hint) from None
            members[key] = Member(key, info, dtype, shape, fortran, offset)
        return members

    def read(self, key: str, kinds: str = "biuf") -> np.ndarray:
        """Member `key` as an array in native byte order; its dtype kind must be one of `kinds`."""
        member = self.members[key]
        where = f"{self.where}: array '{key}'"
        dtype = member.dtype
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in kinds:
            raise ModelcError(f"{where} has type {dtype}, which modelc cannot use"
                              + (" (it cannot be read without pickle)" if dtype.hasobject else ""),
                              "store plain numeric arrays (bool, int or float)" if "f" in kinds else None)
        buffer = bytearray(member.nbytes)
        view = memoryview(buffer)
        try:
            with self._zip.open(member.info) as stream:
                stream.read(member.data_offset)
                done = 0
                while done < len(buffer):
                    got = stream.readinto(view[done:done + _CHUNK])
                    if not got:
                        raise EOFError(f"it ends after {done} of {len(buffer)} bytes")
                    done += got
                if stream.read(1):          # also makes zipfile check the CRC
                    raise ValueError("it holds more bytes than its header says")
        except Exception as e:
            raise ModelcError(f"{where} is damaged ({str(e) or type(e).__name__})",
                              "it may be truncated; write it again") from None
        array = np.frombuffer(buffer, dtype).reshape(member.shape, order="F" if member.fortran else "C")
        if dtype.byteorder not in "=|":
            array = array.astype(dtype.newbyteorder("="))
        return array

    def close(self) -> None:
        if getattr(self, "_zip", None) is not None:
            self._zip.close()
        self._file.close()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
