"""Backends: one per target, all behind the `Backend` interface.

A backend is made from a `Program` and runs its three graphs over whole data
sets. The runtime owns the parameters on the host and the batch order (so
every target sees the same batches); a backend may keep its own copies (the
cuda target keeps everything on the device) and syncs on `load_state` /
`read_state`. Results come back as sums over samples of each output (loss
first, then the metrics), in float64: per epoch, not per batch.
"""
from __future__ import annotations

import numpy as np

from modelc.compiler.formulas import LR_SCALE_DEFAULT
from modelc.errors import ModelcError

TARGETS = ("cpu", "numpy", "cuda")


class Backend:
    """The interface every target implements."""
    name = "?"
    compiled = False    # True once `compile` has made every graph's code ready

    def __init__(self, program):
        self.program = program

    # compiling ---------------------------------------------------------
    def compile(self) -> None:
        """Make every graph's code ready now (compile it, or load it from a cache), so no
        later call pays for it. By default: run each graph once on one zero sample, then
        put the parameters and state back. Idempotent."""
        if self.compiled:
            return
        program = self.program
        params, state = self.read_state()
        x = np.zeros((1,) + tuple(program.input.shape[1:]), np.float32)
        if program.target is not None:
            y = (np.zeros(1, np.int64) if program.target.format == "sparse"
                 else np.zeros((1,) + tuple(program.target.value.shape[1:]), np.float32))
            data = self.upload(x, y)
            if program.train is not None:
                self.train(data, np.zeros(1, np.int64), 1, 0, 1, 0)
            self.evaluate(data, 1)
        self.predict(self.upload(x), 1)
        self.load_state(params, state)
        self.compiled = True

    # state -------------------------------------------------------------
    def load_state(self, params: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def read_state(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        raise NotImplementedError

    # data --------------------------------------------------------------
    def upload(self, x: np.ndarray, y: np.ndarray | None = None):
        """Make a data set resident for this target (float32 x, int64/float32 y)."""
        return (x, y)

    # running -----------------------------------------------------------
    def train(self, data, order: np.ndarray, batch_size: int, first_batch: int, last_batch: int,
              step: int, lr_scale: float = LR_SCALE_DEFAULT) -> np.ndarray:
        """Train on batches [first_batch, last_batch) of `order`; batch b holds samples
        order[b*batch_size : (b+1)*batch_size] and is update number step + (b - first_batch).
        Every update uses the learning rate lr_scale * learning_rate(step, lr, schedule), in
        float64 (a run's argument: changing it compiles nothing). Buffers are sized by
        min(batch_size, samples). Returns the sums over samples of [loss, *metrics]."""
        raise NotImplementedError

    def evaluate(self, data, batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def predict(self, data, batch_size: int) -> np.ndarray:
        raise NotImplementedError

    # data-parallel training: the training graph in two phases (compiler/phases.py) --------
    def gradient_step(self, data, rows: np.ndarray, first_row: int, step: int) -> np.ndarray:
        """The gradient phase of update number `step` on samples `rows` of `data`: a process's share
        of a global batch, which starts at the batch's row `first_row` (dropout masks follow the
        global row). Leaves the finished gradients and moving statistics for `pack`; returns the
        sums over these samples of [loss, *metrics]. Without the one-call `train` loop's speed:
        a target that cannot stop between the phases does not implement it."""
        raise NotImplementedError

    def update_step(self, step: int, lr_scale: float = LR_SCALE_DEFAULT) -> None:
        """The update phase of the step whose gradient phase ran last, with what `unpack` put back."""
        raise NotImplementedError

    def _exchanged(self) -> list[np.ndarray]:
        """The arrays the phases exchange, in `phases().exchanged` order (the target's own storage)."""
        raise NotImplementedError

    def pack(self, out: np.ndarray, weight: float) -> None:
        """The exchanged values, flat and in order, times `weight`, into `out` (float32)."""
        at = 0
        for array in self._exchanged():
            np.multiply(array.reshape(-1), weight, out=out[at:at + array.size], casting="unsafe")
            at += array.size

    def unpack(self, buffer: np.ndarray) -> None:
        """Put the exchanged values back, from `buffer` (as `pack` laid them out)."""
        at = 0
        for array in self._exchanged():
            np.copyto(array, buffer[at:at + array.size].reshape(array.shape), casting="unsafe")
            at += array.size

    @property
    def kernels_per_step(self) -> int | None:
        """Device kernels one training step runs (the cuda target), None where there are none."""
        return None


def get_backend(target: str, program) -> Backend:
    if target == "numpy":
        from modelc.compiler.codegen.numpy_target import NumpyBackend
        return NumpyBackend(program)
    if target == "cpu":
        from modelc.compiler.codegen.cpu import CpuBackend
        return CpuBackend(program)
    if target == "cuda":
        from modelc.compiler.codegen.cuda import CudaBackend
        return CudaBackend(program)
    raise ModelcError(f"unknown target '{target}'", hint="choose one of: " + ", ".join(TARGETS))
