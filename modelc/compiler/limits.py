"""The limits of what modelc accepts, each stated once, and the checks that apply them.

A spec is a small text file: its size and how deeply its calls and lists nest are
bounded before anything reads or recurses over it. Every number must be finite; an
option computed with in float32 (every target's type) must fit float32. A tensor has
at most `MAX_ELEMENTS` elements per sample (the cuda target indexes with int32) and
the whole model at most `MAX_PARAMS` weights. Sizes are counted in exact Python
integers, so no product ever wraps around.
"""
from __future__ import annotations

import math

MAX_SPEC_BYTES = 1 << 20            # specs are small text files
MAX_NESTING = 32                    # calls and lists inside one another
MAX_FLOAT32 = 3.4028235e38          # the largest float32
MAX_ELEMENTS = 2 ** 31 - 1          # per tensor (per sample): the cuda target's int32 indices
MAX_PARAMS = 2 ** 31 - 1            # weights of the whole model
FLOAT32_BYTES = 4


class LimitError(Exception):
    """A size over one of the limits; the message says the count and the memory it needs."""


def memory(count: int) -> str:
    """`292 GiB`: what `count` float32 values take, in binary units."""
    size = count * FLOAT32_BYTES
    if size >= 1024 ** 7:
        return f"about 10^{len(str(size)) - 1} bytes"
    size, unit = float(size), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.0f} {unit}"


def count(n: int) -> str:
    """`78,400,000,000`; a count too long to read as `about 10^99`."""
    return f"{n:,}" if n < 10 ** 24 else f"about 10^{len(str(n)) - 1}"


def product(dims) -> str:
    """`784 × 100,000,000 = 78,400,000,000`, or the single count."""
    dims = tuple(dims)
    total = math.prod(dims)
    if len(dims) <= 1:
        return count(total)
    return " × ".join(count(d) for d in dims) + f" = {count(total)}"


def check_elements(dims, what: str, noun: str) -> None:
    """LimitError when a tensor of (per-sample) shape `dims` is over `MAX_ELEMENTS`:
    `its kernel would hold 784 × 100,000,000 = 78,400,000,000 weights, 292 GiB ...`."""
    total = math.prod(dims)
    if total > MAX_ELEMENTS:
        raise LimitError(f"{what} would hold {product(dims)} {noun}, {memory(total)} as float32; "
                         f"the limit is {MAX_ELEMENTS:,} per tensor")
