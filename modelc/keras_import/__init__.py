"""`modelc from-keras`: a Keras 3 `.keras` file as a modelc spec and checkpoint.

    conversion = convert("model.keras")
    conversion.write("model.model", "model.npz")
    model = modelc.load("model.model", weights="model.npz")

The spec is built and given all of modelc's static checks before anything is written,
so a model modelc would refuse never leaves files behind. `archive` reads the file,
`graph` its layers, `layer_table` and `compile_config` translate them, `translate`
writes the spec text and names the weights.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from modelc.errors import ModelcError, SpecError


@dataclass
class Conversion:
    spec_text: str
    params: dict[str, np.ndarray]          # float32, by modelc parameter name
    notes: list[str] = field(default_factory=list)
    program: object = None                 # the built spec (a compiler Program)

    def write(self, spec_path: str | os.PathLike, weights_path: str | os.PathLike) -> None:
        """The spec (atomically) and a checkpoint `modelc.load`, `predict` and `eval` accept:
        these weights, the optimizer's starting state, no updates done."""
        from modelc import __version__
        from modelc.files import atomic_write
        from modelc.runtime import checkpoint
        program = self.program
        meta = {"spec_hash": program.spec_hash, "model": program.name, "step": 0, "target": None,
                "modelc_version": __version__, "optimizer": program.optimizer, "spec": os.fspath(spec_path),
                "epoch": 0, "lr_scale": 1.0, "stopped": False, "history": [], "callbacks": {}}
        atomic_write(spec_path, self.spec_text.encode("utf-8"))
        checkpoint.save(weights_path, self.params, program.initial_state(), meta)


def convert(path: str | os.PathLike, name: str | None = None) -> Conversion:
    """Read a `.keras` file and translate it; `name` is the spec's model name (default: Keras's)."""
    from modelc.keras_import import archive, translate
    kf = archive.read(path)
    d = translate.draft(kf, name)
    network = _build(translate.spec_text(d, None), kf.filename)
    text = translate.spec_text(d, tuple(network.output.shape[1:]))
    program = _build(text, kf.filename)
    params = {}
    for info in program.params:
        key, shape = info.value.name, tuple(info.value.shape)
        where, array = d.weights.pop(key)
        if tuple(array.shape) != shape:
            raise ModelcError(f"{where} has shape {list(array.shape)}, but modelc's {key} needs {list(shape)}",
                              hint="the file is damaged: its weights do not fit its configuration")
        with np.errstate(over="ignore", invalid="ignore"):
            value = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(value).all():
            raise ModelcError(f"{where} holds a value that is not a finite float32 number")
        params[key] = value
    return Conversion(text, params, d.notes, program)


def _build(text: str, filename: str):
    from modelc.compiler.build import build_program
    from modelc.grammar.parser import parse
    from modelc.runtime import training
    try:
        program = build_program(parse(text, f"<{filename} converted>"))
        training.check_static(program, training.settings(program.spec))
    except SpecError as err:
        raise ModelcError(f"modelc refuses the model converted from {filename}:\n{err}",
                          hint="the Keras model uses something modelc checks differently; the line above "
                               "is the converted spec's") from None
    return program
