"""IDX files (the MNIST format): read, check, write.

An IDX file is a 4-byte magic (0, 0, element type, number of dimensions),
the dimensions as big-endian uint32, then the elements in C order. Files
come gzip-compressed or raw; we tell them apart by content, not by name,
because browsers often unpack `.gz` downloads and keep the name.
Every problem is reported as a ModelcError naming the file, never a crash.
"""
from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from modelc.arrays import check_size
from modelc.errors import ModelcError
from modelc.runtime.npyfile import open_regular

IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: Path) -> bytes:
    """A regular file's bytes, after checking its size fits in memory (a FIFO or a folder is refused)."""
    where = str(path)
    try:
        with open_regular(Path(path), where) as f:
            check_size(os.fstat(f.fileno()).st_size, f"{where}: reading it")
            return f.read()
    except OSError as e:
        raise ModelcError(f"cannot read {path}: {e.strerror or e}") from None


def decompress(data: bytes, name: str) -> bytes:
    """The IDX bytes of a file that may or may not be gzip-compressed.

    Decompression is bounded by the IDX header: its promised size is checked against memory
    first, and at most one byte more is unpacked, so a gzip bomb is refused, not inflated.
    """
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] or head[1] or head[2] not in IDX_TYPES or not head[3]:
                return head                 # parse_idx says what is wrong with it
            head += f.read(4 * head[3])
            if len(head) < 4 + 4 * head[3]:
                return head
            dtype, dims, header = _header(head, name)
            size = header + math.prod(dims) * dtype.itemsize
            check_size(size, f"{name}: unpacking it")
            return head + f.read(size - len(head) + 1)
    except EOFError:
        raise ModelcError(f"{name}: the gzip data is truncated (the file ends early)",
                          "delete it and fetch it again") from None
    except (OSError, zlib.error) as e:
        raise ModelcError(f"{name}: corrupt gzip data ({e})", "delete it and fetch it again") from None


def _header(content: bytes, name: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """The element type, dimensions and header length of IDX bytes, after checking the magic."""
    if len(content) < 4:
        raise ModelcError(f"{name}: too short to be an IDX file ({len(content)} bytes)")
    if content[0] != 0 or content[1] != 0 or content[2] not in IDX_TYPES or content[3] == 0:
        raise ModelcError(f"{name}: bad magic number 0x{content[:4].hex()}: not an IDX file",
                          "IDX files start with 00 00 08 0N (N dimensions)")
    dtype, ndim = IDX_TYPES[content[2]], content[3]
    header = 4 + 4 * ndim
    if len(content) < header:
        raise ModelcError(f"{name}: truncated IDX header ({len(content)} bytes, needs {header})")
    return dtype, struct.unpack(">" + "I" * ndim, content[4:header]), header


def parse_idx(content: bytes, name: str) -> np.ndarray:
    """The array in IDX bytes, after checking the magic and that the size matches the header."""
    dtype, dims, header = _header(content, name)
    count = math.prod(dims)
    expected = header + count * dtype.itemsize
    if len(content) != expected:
        how = "truncated" if len(content) < expected else "too long"
        raise ModelcError(
            f"{name}: wrong size ({how}): its header promises shape {tuple(dims)} of {dtype.name}, "
            f"{expected} bytes, but it holds {'more' if how == 'too long' else len(content)} bytes")
    array = np.frombuffer(content, dtype, count=count, offset=header).reshape(dims)
    if dtype.byteorder == ">":
        array = array.astype(dtype.newbyteorder("="))
    return array


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip or raw) with errors that name it."""
    path = Path(path)
    return parse_idx(decompress(read_bytes(path), str(path)), str(path))


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of an array (used to rebuild MNIST files from other mirrors)."""
    array = np.asarray(array)
    codes = {dt: code for code, dt in IDX_TYPES.items()}
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if dtype not in codes:
        raise ValueError(f"IDX cannot hold {array.dtype}")
    header = bytes([0, 0, codes[dtype], array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def gzip_bytes(content: bytes, filename: str) -> bytes:
    """Deterministic gzip (mtime 0) with the inner file name, as the MNIST mirrors store it."""
    out = io.BytesIO()
    with gzip.GzipFile(filename=filename, mode="wb", fileobj=out, compresslevel=6, mtime=0) as f:
        f.write(content)
    return out.getvalue()
