"""The backend a model runs on: the target's, or a clear error why it cannot run here."""
from __future__ import annotations

from modelc.compiler.codegen import TARGETS, Backend, get_backend
from modelc.errors import ModelcError


def make_backend(target: str, program) -> Backend:
    """The target's backend for `program`; a ModelcError with the fix when the target cannot run."""
    if target not in TARGETS:
        raise ModelcError(f"unknown target '{target}'", hint="choose one of: " + ", ".join(TARGETS))
    if target == "cuda":
        from modelc.doctor import cuda_available
        ok, reason = cuda_available()
        if not ok:
            raise ModelcError(f"the cuda target cannot run here: {reason}",
                              hint="run 'modelc doctor' for details, or use --target cpu")
    try:
        return get_backend(target, program)
    except ModuleNotFoundError as e:
        raise ModelcError(f"the '{target}' target needs the Python package '{e.name}', which is not "
                          "installed", hint=f"pip install {e.name}") from None
