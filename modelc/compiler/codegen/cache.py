"""Generated modules in modelc's cache folder: written once, imported, and healed when damaged.

The cpu and cuda targets write the Python source they generate to
`cache_root()/<kind>` under a name that is the hash of what it is made from,
and import it from there, so Numba's on-disk cache (`cache=True`, index
`.nbi` and data `.nbc` files in `__pycache__` beside the module) finds the
compiled code on the next run. An entry that cannot be loaded (bytes that are
not UTF-8, a truncated module, a folder where the module should be, a
truncated index or data file) is reported once on stderr, removed with
numba's files, and rebuilt; a cache folder that cannot be written is replaced
by a temporary one for this process, and the user is told.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

from modelc.errors import ModelcError
from modelc.files import atomic_write, cache_root

T = TypeVar("T")
_TEMPORARY: dict[str, Path] = {}     # kind -> the folder used instead of an unwritable cache folder


def _say(message: str) -> None:
    print(f"modelc: {message}", file=sys.stderr)


def folder(kind: str) -> Path:
    """Where the generated code of one target lives in this process."""
    return _TEMPORARY.get(kind) or cache_root() / kind


def entry_files(path: Path) -> list[Path]:
    """A generated module and what Python and numba keep for it in `__pycache__`."""
    pycache = path.parent / "__pycache__"
    return [path] + (sorted(pycache.glob(f"{path.stem}.*")) if pycache.is_dir() else [])


def remove_entry(path: Path) -> None:
    for item in entry_files(path):
        try:
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            elif item.exists() or item.is_symlink():
                item.unlink()
        except OSError as err:
            raise ModelcError(f"cannot remove the damaged cache entry '{item}': {err.strerror or err}",
                              hint=f"delete '{item.parent}' by hand, or set MODELC_CACHE_DIR to another folder") \
                from None


def _written(kind: str, name: str, source: bytes) -> Path:
    """The module's file, holding `source`: kept when it already does, else written atomically;
    in a temporary folder (said once) when the cache folder cannot be written."""
    path = folder(kind) / f"{name}.py"
    try:
        if path.is_file() and path.read_bytes() == source:
            return path
    except OSError:
        pass
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(f"'{path}' is a folder")        # damaged: healed by `load`
    try:
        return atomic_write(path, source, make_folder=True, every_rank=True)
    except ModelcError as err:
        if kind in _TEMPORARY:
            raise
        _TEMPORARY[kind] = Path(tempfile.mkdtemp(prefix=f"modelc-{kind}-"))
        _say(f"the compiled code cache folder cannot be written ({err.message}); compiling in "
             f"{_TEMPORARY[kind]} for this run only (set MODELC_CACHE_DIR to a writable folder to keep it)")
        return _written(kind, name, source)


def _imported(kind: str, name: str, source: Callable[[], str], compare: bool):
    if name in sys.modules:
        return sys.modules[name]
    path = folder(kind) / f"{name}.py"
    # a file found is checked by importing it, or against the source when that is cheap to make
    text = source().encode() if compare or not path.is_file() else None
    if text is not None:
        path = _written(kind, name, text)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load(kind: str, name: str, source: Callable[[], str], ready: Callable[[object], T], compare: bool = False) -> T:
    """`ready(module)` of the generated module `name` of target `kind`, imported from the
    cache folder (first written there from `source()` when missing, or, with `compare`,
    when it holds anything else). `ready` does the
    compiling that reads numba's cache. When importing or `ready` fails, the entry is
    damaged: say so, remove it (and numba's files) and build it again, once."""
    from numba.core.errors import NumbaError
    try:
        return ready(_imported(kind, name, source, compare))
    except NumbaError:
        raise       # the generated code itself is wrong: a compiler bug, not a damaged file
    except Exception as err:
        sys.modules.pop(name, None)
        path = folder(kind) / f"{name}.py"
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        _say(f"the compiled code cache entry {path} was damaged ({reason}); rebuilding it")
        remove_entry(path)
    return ready(_imported(kind, name, source, compare))
