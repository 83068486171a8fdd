"""Checkpoints: parameters, optimizer state and metadata in one `.npz` file.

Plain arrays only (`np.savez`, loaded with `allow_pickle=False`), so opening a
checkpoint never runs code. The metadata is one JSON string: the format
version, the architecture hash of the spec (so weights meet only their own
network), the model's name, the update count (Adam's bias correction needs
it), the target that wrote it and the modelc version. Files are written to a
temporary name in the same folder, flushed to disk and renamed, so a crash or
Ctrl-C never leaves half a checkpoint under the real name.
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelc.errors import ModelcError
from modelc.files import atomic_write

FORMAT = "modelc-checkpoint"
VERSION = 1
META_KEY = "__modelc__"
PARAM_PREFIX = "param/"
STATE_PREFIX = "state/"


@dataclass
class Checkpoint:
    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))




def save(path: str | os.PathLike, params: dict[str, np.ndarray], state: dict[str, np.ndarray],
         meta: dict[str, Any]) -> Path:
    """Write a checkpoint atomically. `meta` gains the format name and version."""
    arrays = {PARAM_PREFIX + k: np.ascontiguousarray(v) for k, v in params.items()}
    arrays.update({STATE_PREFIX + k: np.ascontiguousarray(v) for k, v in state.items()})
    meta = {"format": FORMAT, "version": VERSION, **meta}
    arrays[META_KEY] = np.array(json.dumps(meta, sort_keys=True))
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint; any unreadable, foreign or damaged file is a ModelcError."""
    path = Path(path)
    if not path.exists():
        raise ModelcError(f"weights file '{path}' not found",
                          hint="train first with: modelc train SPEC --out " + str(path))
    if path.is_dir():
        raise ModelcError(f"weights file '{path}' is a directory")
    damaged = f"weights file '{path}' is damaged or not a modelc checkpoint"
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ModelcError(f"weights file '{path}' is a single .npy array, not a modelc checkpoint",
                              hint="checkpoints are written by 'modelc train --out' or model.save()")
        with npz:
            if META_KEY not in npz.files:
                raise ModelcError(f"weights file '{path}' is an .npz file but not a modelc checkpoint "
                                  "(it has no modelc metadata)",
                                  hint="checkpoints are written by 'modelc train --out' or model.save()")
            arrays = {key: npz[key] for key in npz.files}
    except ModelcError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, OSError) as e:
        reason = str(e) or type(e).__name__
        raise ModelcError(f"{damaged} ({reason})", hint="it may be truncated; write it again") from None
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
    except ValueError:
        raise ModelcError(f"{damaged} (its metadata is not valid JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelcError(f"{damaged} (unknown metadata format)")
    if meta.get("version") != VERSION:
        raise ModelcError(f"weights file '{path}' has checkpoint format version {meta.get('version')!r}; "
                          f"this modelc (version {_version()}) reads version {VERSION}",
                          hint="use the modelc version that wrote it, or train again")
    params = {k[len(PARAM_PREFIX):]: v for k, v in arrays.items() if k.startswith(PARAM_PREFIX)}
    state = {k[len(STATE_PREFIX):]: v for k, v in arrays.items() if k.startswith(STATE_PREFIX)}
    return Checkpoint(params, state, meta)


def check_matches(checkpoint: Checkpoint, path: str | os.PathLike, program) -> None:
    """Refuse weights written for another network, naming both models and their hashes."""
    meta = checkpoint.meta
    if meta.get("spec_hash") != program.spec_hash:
        raise ModelcError(
            f"weights file '{path}' was written for model '{meta.get('model')}' (architecture "
            f"{meta.get('spec_hash')}), but this spec is model '{program.name}' (architecture "
            f"{program.spec_hash})",
            hint="load weights trained from this spec, or train it first")
    for info in program.params:
        name, shape = info.value.name, tuple(info.value.shape)
        if name not in checkpoint.params:
            raise ModelcError(f"weights file '{path}' has no parameter '{name}'")
        if checkpoint.params[name].shape != shape:
            raise ModelcError(f"weights file '{path}': parameter '{name}' has shape "
                              f"{checkpoint.params[name].shape}, the spec needs {shape}")
        if not np.all(np.isfinite(checkpoint.params[name])):
            raise ModelcError(f"weights file '{path}': parameter '{name}' holds NaN or infinity",
                              hint="the training that wrote it diverged; train again with a smaller lr")


def state_matches(checkpoint: Checkpoint, program) -> bool:
    """Whether the optimizer state in the file fits this spec's optimizer (it may have changed)."""
    return (set(checkpoint.state) == {s.name for s in program.state}
            and all(checkpoint.state[s.name].shape == tuple(s.shape) for s in program.state))


def _version() -> str:
    from modelc import __version__
    return __version__
