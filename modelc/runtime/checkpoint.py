"""Checkpoints: parameters, optimizer state and metadata in one `.npz` file.

Plain arrays only (`np.savez`, loaded with `allow_pickle=False`), so opening a
checkpoint never runs code. The metadata is one JSON string: the format
version, the architecture hash of the spec (so weights meet only their own
network), the model's name, the update count (Adam's bias correction needs
it), the target that wrote it and the modelc version, and optionally the
training position (epoch, history, lr_scale, callbacks, shuffle_seed), each
type-checked on loading. Reading goes through `npyfile`, which checks the zip
directory and every `.npy` header before decompressing anything. Files are written to a
temporary name in the same folder, flushed to disk and renamed, so a crash or
Ctrl-C never leaves half a checkpoint under the real name.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelc.errors import ModelcError
from modelc.files import atomic_write
from . import npyfile

FORMAT = "modelc-checkpoint"
VERSION = 1
META_KEY = "__modelc__"
PARAM_PREFIX = "param/"
STATE_PREFIX = "state/"
CALLBACK_PREFIX = "callback/"     # arrays a callback keeps (EarlyStopping's best weights): callback/<i>/<j>


@dataclass
class Checkpoint:
    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    meta: dict[str, Any]
    callback_arrays: dict[str, np.ndarray]      # by "<callback index>/<array index>"

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


def save(path: str | os.PathLike, params: dict[str, np.ndarray], state: dict[str, np.ndarray],
         meta: dict[str, Any], callback_arrays: dict[str, np.ndarray] | None = None) -> Path:
    """Write a checkpoint atomically. `meta` gains the format name and version."""
    arrays = {PARAM_PREFIX + k: np.ascontiguousarray(v) for k, v in params.items()}
    arrays.update({STATE_PREFIX + k: np.ascontiguousarray(v) for k, v in state.items()})
    arrays.update({CALLBACK_PREFIX + k: np.ascontiguousarray(v) for k, v in (callback_arrays or {}).items()})
    meta = {"format": FORMAT, "version": VERSION, **meta}
    arrays[META_KEY] = np.array(json.dumps(meta, sort_keys=True))
    return atomic_write(path, lambda f: np.savez(f, **arrays))


_WRITTEN_BY = "checkpoints are written by 'modelc train --out' or model.save()"
MAX_META_BYTES = 1 << 28      # as UTF-32 text: the history of some 400,000 epochs (and a callback's rows) fits
MAX_COUNT = 1 << 53           # the largest step, epoch or seed a checkpoint may hold (exact in float64)


def _whole(value: Any, low: int = 0) -> bool:
    return type(value) is int and low <= value <= MAX_COUNT


def _number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


# The metadata fields modelc reads, each with what it must be; others (model, target, ...) are
# only shown in messages and must be strings or null (a spec without an optimizer) when present.
_FIELDS: dict[str, tuple[Any, str]] = {
    "step": (_whole, f"a whole number of updates, 0..{MAX_COUNT}"),
    "epoch": (_whole, f"a whole number of epochs, 0..{MAX_COUNT}"),
    "shuffle_seed": (_whole, f"a whole number, 0..{MAX_COUNT}"),
    "lr_scale": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf,
                 "a finite number > 0"),
    "callbacks": (lambda v: isinstance(v, dict), "an object"),
    "history": (lambda v: isinstance(v, list) and all(
        isinstance(row, dict) and all(isinstance(k, str) and _number_or_null(x) for k, x in row.items())
        for row in v), "a list of objects mapping names to numbers or null"),
}
_TEXT_FIELDS = ("spec_hash", "model", "target", "modelc_version", "optimizer", "spec")


def load(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint; any unreadable, foreign, damaged or crafted file is a ModelcError.

    Only the metadata, parameters and optimizer state are read, each checked
    (see npyfile) before it is decompressed; values must be finite in float32.
    """
    path = Path(path)
    where = f"weights file '{path}'"
    try:
        archive = npyfile.Archive(path, where, hint=_WRITTEN_BY)
    except npyfile.NotAFile as e:
        if e.reason == "not found":
            raise ModelcError(e.message, hint="train first with: modelc train SPEC --out " + str(path)) from None
        raise
    with archive:
        if META_KEY not in archive.members:
            raise ModelcError(f"{where} is an .npz file but not a modelc checkpoint (it has no modelc metadata)",
                              hint=_WRITTEN_BY)
        for key in archive.members:
            if key != META_KEY and not key.startswith((PARAM_PREFIX, STATE_PREFIX, CALLBACK_PREFIX)):
                raise ModelcError(f"{where} holds an array '{key[:80]}' that is no parameter or optimizer "
                                  "state: not a modelc checkpoint", hint=_WRITTEN_BY)
        meta = _meta(archive, where)
        arrays = {key: _finite32(archive.read(key), where, key) for key in archive.members if key != META_KEY}
    params = {k[len(PARAM_PREFIX):]: v for k, v in arrays.items() if k.startswith(PARAM_PREFIX)}
    state = {k[len(STATE_PREFIX):]: v for k, v in arrays.items() if k.startswith(STATE_PREFIX)}
    kept = {k[len(CALLBACK_PREFIX):]: v for k, v in arrays.items() if k.startswith(CALLBACK_PREFIX)}
    return Checkpoint(params, state, meta, kept)


def _meta(archive: npyfile.Archive, where: str) -> dict[str, Any]:
    damaged = f"{where} is damaged or not a modelc checkpoint"
    member = archive.members[META_KEY]
    if member.shape != () or member.dtype.kind != "U" or member.nbytes > MAX_META_BYTES:
        raise ModelcError(f"{damaged} (its metadata is not one text of at most {MAX_META_BYTES} bytes)")
    try:
        meta = json.loads(str(archive.read(META_KEY, kinds="U")))
    except (ValueError, RecursionError):
        raise ModelcError(f"{damaged} (its metadata is not valid JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelcError(f"{damaged} (unknown metadata format)")
    if meta.get("version") != VERSION:
        raise ModelcError(f"{where} has checkpoint format version {str(meta.get('version'))[:40]}; "
                          f"this modelc (version {_version()}) reads version {VERSION}",
                          hint="use the modelc version that wrote it, or train again")
    for key, (valid, must) in _FIELDS.items():
        if key in meta and not valid(meta[key]):
            raise ModelcError(f"{where}: its metadata field '{key}' is {json.dumps(meta[key])[:60]}, "
                              f"but must be {must}", hint="the file was altered; write it again with model.save()")
    for key in _TEXT_FIELDS:
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise ModelcError(f"{where}: its metadata field '{key}' is {json.dumps(meta[key])[:60]}, "
                              "but must be a string or null", hint="the file was altered; write it again with model.save()")
    return meta


def _finite32(array: np.ndarray, where: str, key: str) -> np.ndarray:
    """The array as float32, refusing a value that is not finite there (1e300 in float64 is inf in float32)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(array, dtype=np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        i = np.unravel_index(int(np.argmax(bad)), out.shape)
        index = i[0] if len(i) == 1 else tuple(int(k) for k in i)
        too_big = np.isfinite(array[i]) if array.dtype.kind == "f" else True
        raise ModelcError(f"{where}: {key.replace('/', ' ', 1)} holds {array[i].item()!r} at index {index}, "
                          + ("beyond float32's range" if too_big else "which is not a finite number"),
                          hint="the training that wrote it diverged; train again with a smaller lr")
    return out


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


def state_matches(checkpoint: Checkpoint, program) -> bool:
    """Whether the optimizer state in the file fits this spec's optimizer (it may have changed)."""
    return (set(checkpoint.state) == {s.name for s in program.state}
            and all(checkpoint.state[s.name].shape == tuple(s.shape) for s in program.state))


def _version() -> str:
    from modelc import __version__
    return __version__
