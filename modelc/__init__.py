"""modelc: a static-graph compiler for neural networks written as `.model` specs.

    import modelc
    model = modelc.compile("specs/mnist.model", target="cpu")
    result = model.train_from_spec()            # the spec's own train section
    model.fit(x, y, epochs=3, batch_size=32)    # or Keras-style, on NumPy arrays
    model.save("mnist.npz")
    model = modelc.load("specs/mnist.model", weights="mnist.npz")

Importing modelc is cheap: the compiler, NumPy-heavy runtime and Numba
backends load on first use.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from modelc.errors import ModelcError, SpecError
    from modelc.runtime.model import Model

__version__ = "0.1.0"
__all__ = ["compile", "load", "read_spec", "Model", "ModelcError", "SpecError", "losses", "callbacks", "datasets",
           "__version__"]


def read_spec(spec):
    """A spec from a path (ends in .model, or an existing file) or from spec text.

    Returns (ast.Spec, base_dir): relative data paths resolve against base_dir."""
    from modelc.errors import ModelcError
    from modelc.grammar import ast
    from modelc.grammar.parser import parse, parse_file
    if isinstance(spec, ast.Spec):
        return spec, None
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise ModelcError(f"a spec is a path or spec text, not {type(spec).__name__}")
    is_path = spec.endswith(".model") or ("\n" not in spec and "{" not in spec and os.path.isfile(spec))
    if is_path:
        return parse_file(spec), os.path.dirname(os.path.abspath(spec))
    return parse(spec, "<spec>"), None


def compile(spec, target: str = "cpu", data_dir: str | None = None, *, seed: int | None = None) -> "Model":
    """Parse, check and build a spec for `target` ("cpu", "numpy" or "cuda"); weights drawn from
    `seed` (default: the spec's train seed, else 0)."""
    from modelc.compiler.build import build_program
    from modelc.runtime.model import Model
    parsed, base_dir = read_spec(spec)
    return Model(build_program(parsed), target, seed=seed, data_dir=data_dir, base_dir=base_dir)


def load(spec, weights, target: str = "cpu", data_dir: str | None = None) -> "Model":
    """Compile `spec` and load a checkpoint written for it (by any target)."""
    model = compile(spec, target, data_dir)
    model.load_weights(weights)
    return model


def __getattr__(name: str):
    if name in ("losses", "callbacks", "datasets"):
        import importlib
        return importlib.import_module(f"modelc.{name}")
    if name in ("ModelcError", "SpecError"):
        from modelc import errors
        return getattr(errors, name)
    if name == "Model":
        from modelc.runtime.model import Model
        return Model
    raise AttributeError(f"module 'modelc' has no attribute {name!r}")
