"""Where modelc keeps files, and how it writes them: one place for both.

Every file modelc writes (weights, history, predictions, cached data,
generated code) goes through `atomic_write`: a temp file beside the target,
fsync, then rename, so a reader never sees half a file and an interrupted
run leaves the old file intact.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union

from modelc.errors import ModelcError
from modelc.mpi_env import first_rank


def cache_root() -> Path:
    """MODELC_CACHE_DIR, else $XDG_CACHE_HOME/modelc, else ~/.cache/modelc."""
    root = os.environ.get("MODELC_CACHE_DIR")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "modelc"


def spec_relative(path: str, base_dir: Union[str, os.PathLike, None]) -> Path:
    """A path a spec names (a data file, a callback's file): `~` expanded, and a relative one taken
    from the spec's folder `base_dir` (when the spec came from a file), not from where modelc runs."""
    p = Path(os.path.expanduser(path))
    if not p.is_absolute() and base_dir:
        p = Path(base_dir) / p
    return p


def file_problem(path: Union[str, os.PathLike]) -> str | None:
    """Why `path` is not a regular file one can read or replace ("not found", "is a directory",
    "is a named pipe (FIFO)", ...), or None when it is one. Asked before opening, so a FIFO
    never blocks and a device is never read or replaced."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "not found"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return "is not a regular file (a named pipe, FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is not a regular file (a device)"
    return "is not a regular file"


def atomic_write(path: Union[str, os.PathLike], content: Union[bytes, Callable[[BinaryIO], None]],
                 make_folder: bool = False, every_rank: bool = False) -> Path:
    """Write `content` (bytes, or a function that writes to a binary file) to `path` atomically.
    The file gets the permissions `open()` would give it (mkstemp alone makes 0600). Through a
    symlink the link's target is written, and only a regular file is ever replaced: a
    directory, FIFO or device under that name is refused, never swapped for a file.
    In a data-parallel job only rank 0 writes (every rank holds the same model, and a shared
    folder must not see N writers); caches and a rank's own files say `every_rank`."""
    if not os.fspath(path):
        raise ModelcError("cannot write a file with an empty name")
    path = Path(os.path.realpath(os.path.expanduser(path)))
    if not every_rank and not first_rank():
        return path
    problem = file_problem(path)
    if problem not in (None, "not found"):
        raise ModelcError(f"cannot write '{path}': it {problem}")
    folder = path.parent if str(path.parent) else Path(".")
    if make_folder:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ModelcError(f"cannot create the folder '{folder}': {e.strerror or e}") from None
    if not folder.is_dir():
        raise ModelcError(f"cannot write '{path}': the folder '{folder}' does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise ModelcError(f"cannot write '{path}': {e.strerror or e}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, (bytes, bytearray)):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _sync_folder(folder)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ModelcError(f"cannot write '{path}': {e.strerror or e}") from None
        raise
    return path


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable; not every file system allows this."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
