"""What each rank of a test's MPI job runs: `python -m mpi4py tests/parallel_cases.py CASE OUT ARGS...`.

Every rank runs the case; rank 0 writes what the test compares to OUT/result.npz
(plus OUT/result.json). `tests/test_parallel.py` starts the jobs and compares
them with the same training in one process (`train`, below, run in the test).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SPECS = {
    # dense layers, dropout and global gradient clipping: each rank's share must give one
    # process's update (the clip norm is of the summed gradient, the mask of the global row)
    "dropout": """
model parallel_dropout
input  x: f32[5]
target y: int[] classes 3
network {
    x -> dense(12, relu) -> dropout(0.3) -> dense(8, tanh) -> dense(3, softmax) => probs
}
loss      sparse_categorical_crossentropy(y, probs)
optimizer adam(lr=0.01, global_clipnorm=0.5)
metrics   accuracy
""",
    # a convolution with batch normalization, plain SGD: one step's update is linear in the gradient
    "batchnorm": """
model parallel_bn
input  image: f32[6, 6, 1]
target y: int[] classes 2
network {
    image -> conv2d(3, 3, relu) -> batch_normalization -> flatten -> dense(2, softmax) => probs
}
loss      sparse_categorical_crossentropy(y, probs)
optimizer sgd(lr=0.1)
metrics   accuracy
""",
}


def data(spec: str, n: int, seed: int = 5):
    import modelc
    program = modelc.compile(SPECS[spec], "numpy").program
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + tuple(program.input.shape[1:])).astype(np.float32)
    y = rng.integers(0, int(program.output.shape[-1]), n)
    return x, y


def train(spec: str, target: str, n: int, batch: int, epochs: int, group=None):
    """Fit `spec` on `n` random samples; (params, state, last epoch's logs, evaluation)."""
    import modelc
    model = modelc.compile(SPECS[spec], target, seed=1)
    if group is not None:
        model.group = group
    x, y = data(spec, n)
    history = model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0, validation_data=(x[:7], y[:7]))
    params, state = model.backend.read_state()
    return params, state, history.epochs[-1], model.evaluate(x, y, batch_size=batch, return_dict=True)


def case_fit(out: Path, spec: str, target: str, n: str, batch: str, epochs: str) -> None:
    from modelc.runtime.parallel import world
    params, state, logs, evaluation = train(spec, target, int(n), int(batch), int(epochs))
    if world().rank == 0:
        np.savez(out / "result.npz", **{f"p/{k}": v for k, v in params.items()},
                 **{f"s/{k}": v for k, v in state.items()})
        (out / "result.json").write_text(json.dumps({"logs": logs, "evaluation": evaluation}))


def case_writes(out: Path) -> None:
    """Each rank saves to a file of its own name: only rank 0's may exist afterwards."""
    import modelc
    from modelc.runtime.parallel import world
    model = modelc.compile(SPECS["dropout"], "cpu", seed=1)
    model.fit(*data("dropout", 40), epochs=1, batch_size=8, verbose=0)
    model.save(out / f"rank{world().rank}.npz")


def case_differs(out: Path) -> None:
    """Rank 1 holds other data: every rank must refuse to train, naming rank 1."""
    import modelc
    from modelc.errors import ModelcError
    from modelc.runtime.parallel import world
    x, y = data("dropout", 40)
    if world().rank == 1:
        x = x.copy()
        x[3, 1] += 1.0
    model = modelc.compile(SPECS["dropout"], "cpu", seed=1)
    try:
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    except ModelcError as err:
        (out / f"error{world().rank}.txt").write_text(str(err))


if __name__ == "__main__":
    name, folder, *args = sys.argv[1:]
    globals()[f"case_{name}"](Path(folder), *args)
