"""Reading a Keras 3 `.keras` file: a zip holding `config.json` (the model's architecture
and compile configuration), `metadata.json` (the Keras version) and `model.weights.h5`.

Nothing in the file is executed: the JSON is parsed as data and the H5 member is opened
from memory with h5py, following only hard links (an external or soft link could name
another file on this machine). Every member's size is bounded before it is read.

Keras's weights file (written by its saving_lib module) holds each layer of a model's layer
list under `layers/<snake-cased class name>[_<counter>]/vars/<i>`, the counter per class
name in the order of the layer list (a Sequential's list leaves out its InputLayer, a
functional model's has it; an InputLayer holds no variables either way), and `<i>`
numbering the layer's variables as its `save_own_variables` lists them.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelc.errors import ModelcError
from modelc.files import file_problem

CONFIG, METADATA, WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
MAX_JSON_BYTES = 64 << 20            # a model's architecture and compile configuration
MAX_WEIGHTS_BYTES = 8 << 30          # the h5 member, read whole into memory
LEGACY_LAYERS = "_layer_checkpoint_dependencies"    # what Keras 2.13 called `layers`
_WRITTEN_BY = "a .keras file is written by Keras 3's model.save('NAME.keras')"


@dataclass
class KerasFile:
    filename: str                        # the file's name, for messages and the spec's first line
    config: dict
    metadata: dict
    weights: dict[str, list[np.ndarray]]   # "layers/dense_1" -> its variables, vars/0 first

    @property
    def keras_version(self) -> str:
        return str(self.metadata.get("keras_version", "unknown"))


def read(path: str | os.PathLike) -> KerasFile:
    """The three members of a `.keras` file, checked; a damaged or foreign file is a ModelcError."""
    path = Path(path)
    where = f"Keras file '{path}'"
    problem = file_problem(path)
    if problem:
        raise ModelcError(f"{where} {problem}", hint=_WRITTEN_BY)
    if not zipfile.is_zipfile(path):
        raise ModelcError(f"{where} is not a .keras file (not a zip archive)", hint=_WRITTEN_BY)
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            for name in (CONFIG, METADATA, WEIGHTS):
                if name not in members:
                    found = ", ".join(sorted(members)[:8]) or "nothing"
                    raise ModelcError(f"{where} has no '{name}' (it holds {found})",
                                      hint=_WRITTEN_BY + "; an .h5 or SavedModel file is not one")
            config = _json(archive, members[CONFIG], where)
            metadata = _json(archive, members[METADATA], where)
            weights = _weights(_member(archive, members[WEIGHTS], MAX_WEIGHTS_BYTES, where), where)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as e:
        raise ModelcError(f"{where} is damaged: {e}", hint=_WRITTEN_BY) from None
    except OSError as e:
        raise ModelcError(f"{where} cannot be read: {e.strerror or e}") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelcError(f"{where}: its {CONFIG} is not a Keras model configuration", hint=_WRITTEN_BY)
    if not isinstance(metadata, dict):
        raise ModelcError(f"{where}: its {METADATA} is not an object", hint=_WRITTEN_BY)
    return KerasFile(path.name, config, metadata, weights)


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, where: str) -> bytes:
    if info.file_size > limit:
        raise ModelcError(f"{where}: its '{info.filename}' is {info.file_size:,} bytes, more than the "
                          f"{limit:,} modelc reads")
    with archive.open(info) as f:
        data = f.read(limit + 1)
    if len(data) != info.file_size:
        raise ModelcError(f"{where} is damaged: '{info.filename}' holds {len(data):,} bytes, its zip "
                          f"entry says {info.file_size:,}")
    return data


def _json(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str):
    data = _member(archive, info, MAX_JSON_BYTES, where)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ModelcError(f"{where} is damaged: its '{info.filename}' is not valid JSON",
                          hint=_WRITTEN_BY) from None


def _h5py():
    from modelc import extras
    extras.require("keras", "reading a .keras file's weights")
    import h5py
    return h5py


def _weights(data: bytes, where: str) -> dict[str, list[np.ndarray]]:
    """Every `.../vars` group's datasets, by the group's path (without `/vars`)."""
    h5py = _h5py()
    found: dict[str, list[np.ndarray]] = {}
    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            _walk(h5py, h5, "", found, where)
    except ModelcError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelcError(f"{where} is damaged: its '{WEIGHTS}' is not a readable HDF5 file ({e})",
                          hint=_WRITTEN_BY) from None
    return found


def _walk(h5py, group, path: str, found: dict, where: str, depth: int = 0) -> None:
    if depth > 64:
        raise ModelcError(f"{where}: its '{WEIGHTS}' nests groups more than 64 deep")
    for key in group:
        link = group.get(key, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise ModelcError(f"{where}: its '{WEIGHTS}' has a link '{path}/{key}' to somewhere else; "
                              "Keras writes none", hint=_WRITTEN_BY)
        item = group[key]
        inner = f"{path}/{key}" if path else key
        if key == "vars" and isinstance(item, h5py.Group):
            found[path.replace(LEGACY_LAYERS, "layers")] = _variables(h5py, item, inner, where)
        elif isinstance(item, h5py.Group):
            _walk(h5py, item, inner, found, where, depth + 1)


def _variables(h5py, group, path: str, where: str) -> list[np.ndarray]:
    """vars/0, vars/1, ...: numbered from 0 without a gap."""
    keys = list(group)
    if sorted(keys, key=lambda k: (len(k), k)) != [str(i) for i in range(len(keys))]:
        raise ModelcError(f"{where}: its '{WEIGHTS}' group '{path}' holds {', '.join(keys[:6])}, not the "
                          "variables 0, 1, ... Keras writes", hint=_WRITTEN_BY)
    out = []
    for i in range(len(keys)):
        item = group[str(i)]
        if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "fiu":
            raise ModelcError(f"{where}: '{path}/{i}' in its '{WEIGHTS}' is not an array of numbers")
        out.append(np.asarray(item[()]))
    return out
