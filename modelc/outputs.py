"""The files a command will write, checked before it starts working.

A run may take hours; an output it cannot write must be found before the
first epoch, not after the last. And nothing the user gave as an input (the
spec, a data file, the weights read) or another output of the same run is
ever overwritten: each output is compared with every other path by the file
it finally names (symlinks followed), and must be a regular file or not yet
exist, in a folder that exists and can be written.
"""
from __future__ import annotations

import os
from pathlib import Path

from modelc.errors import ModelcError
from modelc.files import file_problem


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def _same(a: str, b: str) -> bool:
    if _real(a) == _real(b):
        return True
    try:
        return os.path.samefile(a, b)      # hard links, bind mounts
    except OSError:
        return False


def check_output(flag: str, path: str) -> None:
    """One output: a regular file or nothing yet, in a writable folder (a symlink's target counts)."""
    if not path or not path.strip():
        raise ModelcError(f"{flag} got an empty file name", hint=f"give {flag} a file to write")
    real = Path(_real(path))
    problem = file_problem(real)
    if problem == "is a directory":
        raise ModelcError(f"{flag} {path} is a directory", hint=f"give {flag} a file name inside it")
    if problem not in (None, "not found"):
        raise ModelcError(f"{flag} {path} {problem}; modelc writes only regular files",
                          hint=f"give {flag} a new file name")
    folder = real.parent
    if not folder.is_dir():
        raise ModelcError(f"{flag} {path}: the folder '{folder}' does not exist",
                          hint=f"create it first (mkdir -p {folder}) or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ModelcError(f"{flag} {path}: the folder '{folder}' cannot be written",
                          hint="choose a folder you can write to")


def check_outputs(outputs: list[tuple[str, str]], inputs: list[tuple[str, str]]) -> None:
    """Every (flag, path) output checked alone, then against each input and each other."""
    for flag, path in outputs:
        check_output(flag, path)
    for i, (flag, path) in enumerate(outputs):
        for what, source in inputs:
            if source and os.path.exists(source) and _same(path, source):
                raise ModelcError(f"{flag} {path} is {what}; writing it would destroy it",
                                  hint=f"give {flag} another file name")
        for other_flag, other in outputs[:i]:
            if _same(path, other):
                raise ModelcError(f"{flag} and {other_flag} both name '{path}'; one would overwrite the other",
                                  hint="give each output its own file")


def check_folder(flag: str, path: str, inputs: list[tuple[str, str]]) -> None:
    """An output folder (`--checkpoint DIR`): a folder or nothing yet, never an input; created now."""
    if not path or not path.strip():
        raise ModelcError(f"{flag} got an empty folder name")
    real = Path(_real(path))
    if real.exists() and not real.is_dir():
        raise ModelcError(f"{flag} {path} is a file, not a folder", hint=f"give {flag} a folder (it is created)")
    parent = real if real.is_dir() else next((p for p in real.parents if p.exists()), Path("/"))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ModelcError(f"{flag} {path}: '{parent}' cannot be written", hint="choose a folder you can write to")
    for what, source in inputs:
        if source and os.path.isdir(source) and _same(path, source):
            raise ModelcError(f"{flag} {path} is {what}")
    try:
        real.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelcError(f"cannot create the folder {flag} {path}: {e.strerror or e}") from None
