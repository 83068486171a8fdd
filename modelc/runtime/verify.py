"""Do the targets train alike? The same short run on each, compared array by array.

Every target starts from the same initial weights (one seed) and trains on
the same first `steps` batches of the spec's training data, in order (no
shuffle). Then its losses, metrics, parameters and optimizer state are
compared with those of the first target, the reference.

Tolerance: an array passes when max|a - b| <= rtol * max|ref| + atol. float32
has a 6e-8 unit roundoff; targets sum matrix products in different orders
(BLAS blocking, threads, fused kernels), which changes a 784-term dot product
by ~1e-6 relative, and Adam's normalised step passes such differences on at
about their size each step. rtol 1e-4 leaves two orders of magnitude above
that after 20 steps, while any real error (a wrong gradient, a missed update:
one Adam step moves weights by lr = 1e-3 against weights of scale ~0.1) is 1e-2
relative or more. atol 1e-7 only lets arrays that are exactly zero on one side
(unused state) pass at roundoff level.

Some networks amplify roundoff far more: after 20 Adam steps of the MNIST
convnet (ReLU and max pooling pick different elements once inputs differ in
the last bit; Adam divides each gradient by its own size) the float32 numpy
reference is itself 1e-3 to 1e-2 away from the same run in float64. So when an
array fails the tolerance and the reference is numpy, the reference run is
repeated in float64, and the array passes if the target is no further from the
float64 run than the float32 reference is (`NOISE` times that, plus atol): the
target then differs from the reference by no more than the reference's own
rounding error. A wrong gradient or update stays far outside it.

Importing this module is cheap, so the command line can show its defaults;
NumPy and the model runtime load when `verify` runs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from modelc.errors import ModelcError
from modelc.runtime import training

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from modelc.runtime.model import Model

STEPS = 20
RTOL = 1e-4
RANKS_RTOL = 1e-5      # N processes against one, on one target: only the sums' order differs
ATOL = 1e-7
NOISE = 2.0

_VERDICTS = {"ok": "ok", "FAIL": "FAIL", "unchecked": "(not checked: argmax ties may flip)",
             "noise": "ok: within the float32 reference's own error"}


@dataclass
class Row:
    """One compared value: the loss, a metric, a parameter or an optimizer state array."""
    name: str
    max_abs: float          # max |a - b|
    max_rel: float          # that relative to the reference's scale, max |ref|
    status: str             # "ok", "noise" (see the module's doc), "FAIL", or "unchecked" (metrics)


@dataclass
class Comparison:
    """One target against the reference, with the seconds each took for the steps."""
    target: str
    reference: str
    seconds: float
    reference_seconds: float
    rows: list[Row]

    @property
    def failures(self) -> int:
        return sum(row.status == "FAIL" for row in self.rows)


@dataclass
class VerifyReport:
    """What `verify` ran and found; `text()` is what `modelc verify` prints."""
    spec: str
    targets: list[str]
    steps: int
    batch: int
    seed: int
    samples: int            # steps * batch: the samples trained on, repeats included
    rtol: float
    atol: float
    comparisons: list[Comparison]

    @property
    def failures(self) -> int:
        return sum(c.failures for c in self.comparisons)

    @property
    def passed(self) -> bool:
        return self.failures == 0

    def text(self) -> str:
        out = [f"verify {self.spec}: {self.steps} step(s) of batch {self.batch} ({self.samples:,} samples, "
               f"no shuffle), seed {self.seed}, targets {', '.join(self.targets)}",
               f"tolerance: max|a - b| <= {self.rtol:g} * max|{self.targets[0]}| + {self.atol:g} per array "
               f"(relative to the array's scale; float32)"]
        for c in self.comparisons:
            out += ["", f"{c.target} vs {c.reference}  ({c.seconds:.2f}s vs {c.reference_seconds:.2f}s "
                        f"for {self.steps} steps)"]
            width = max(len(row.name) for row in c.rows) + 2
            out.append(f"  {'':<{width}}{'max abs diff':>14}{'max rel diff':>14}")
            out += [f"  {row.name:<{width}}{row.max_abs:>14.3g}{row.max_rel:>14.3g}  {_VERDICTS[row.status]}"
                    for row in c.rows]
        if not self.passed:
            out += ["", f"verify: FAILED: {self.failures} value(s) differ beyond the tolerance"]
        else:
            others = self.targets[1:]
            out += ["", f"verify: ok: {', '.join(others)} match{'es' if len(others) == 1 else ''} "
                        f"{self.targets[0]} within the tolerance"]
        return "\n".join(out)


@dataclass
class _Run:
    """What one target's run gave: its time, results and final arrays."""
    target: str
    seconds: float
    train: dict[str, float]         # the means over the steps
    evaluation: dict[str, float]    # after the steps, over the samples they saw
    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]


def verify(program, targets: Sequence[str], *, steps: int = STEPS, batch: int | None = None,
           seed: int | None = None, rtol: float = RTOL, atol: float = ATOL, data_dir: str | None = None,
           base_dir: str | None = None, quiet: bool = False, splits=None) -> VerifyReport:
    """Train `steps` batches of `batch` (default: the spec's) on each target from the weights of
    `seed` (default: the spec's) and compare each with the first. The data is the spec's
    training split, read from `data_dir`/`base_dir` as `Model.load_data` does, or `splits`."""
    from modelc.runtime.model import Model, positive_int
    targets = list(targets)
    if len(targets) < 2:
        raise ModelcError("verify compares two or more targets, e.g. --targets numpy,cpu")
    if program.train is None:
        raise ModelcError(f"'{program.name}' has no loss, so there is no training to verify")
    settings = training.settings(program.spec)
    steps = positive_int(steps, "steps")
    batch = positive_int(settings.batch if batch is None else batch, "batch")
    models = [Model(program, target, seed=seed, data_dir=data_dir, base_dir=base_dir) for target in targets]
    train, evaluation = steps_data(models[0], steps, batch, splits, quiet)
    runs = [_train(model, train, evaluation, batch) for model in models]
    rows = [_rows(program, runs[0], run, rtol, atol) for run in runs[1:]]
    if targets[0] == "numpy" and any(row.status == "FAIL" for group in rows for row in group):
        exact = _train(_float64(program, models[0].seed), train, evaluation, batch)
        rows = [_rows(program, runs[0], run, rtol, atol, exact) for run in runs[1:]]
    comparisons = [Comparison(run.target, runs[0].target, run.seconds, runs[0].seconds, group)
                   for run, group in zip(runs[1:], rows)]
    return VerifyReport(program.spec.source.filename, targets, steps, batch, models[0].seed, steps * batch,
                        rtol, atol, comparisons)


def steps_data(model: Model, steps: int, batch: int, splits=None, quiet: bool = False) -> tuple[tuple, tuple]:
    """What `steps` batches of `batch` train on: the first samples of the spec's training split in
    order (wrapping round if need be), and those samples once each, to evaluate on after."""
    import numpy as np
    from modelc.runtime.binding import bind
    program = model.program
    if splits is None:
        splits = model.load_splits(quiet=quiet)
    data = model.settings.data
    x, y = bind(program, splits.train.x, splits.train.y,
                f"the training split of {data if data is not None else 'the data'}")
    order = np.arange(steps * batch) % len(x)
    seen = order[:len(x)]
    return (x[order], y[order]), (x[seen], y[seen])


def _train(model: Model, train: tuple, evaluation: tuple, batch: int) -> _Run:
    """One epoch over `train` in order (its batches are the steps), then evaluate on `evaluation`."""
    start = time.perf_counter()
    history = model.fit(*train, epochs=1, batch_size=batch, shuffle=False, verbose=0)
    seconds = time.perf_counter() - start
    params, state = model.backend.read_state()
    return _Run(model.target, seconds, history.split(""), model.evaluate(*evaluation, batch_size=batch, return_dict=True),
                params, state)


def _float64(program, seed: int) -> Model:
    """The numpy reference again, computing in float64, from the same initial weights."""
    import numpy as np
    from modelc.compiler.codegen.numpy_target import NumpyBackend
    from modelc.runtime.model import Model
    model = Model(program, "numpy", seed=seed)
    params, state = model.backend.read_state()
    model.backend = NumpyBackend(program, np.float64)
    model.backend.load_state(params, state)
    return model


def _rows(program, reference: _Run, run: _Run, rtol: float, atol: float, exact: _Run | None = None) -> list[Row]:
    """Each compared value as (its name, how to read it from a run, whether it is checked)."""
    compared = [("loss (mean over steps)", lambda r: r.train["loss"], True),
                ("loss after training", lambda r: r.evaluation["loss"], True)]
    compared += [(f"{k} (mean over steps)", lambda r, k=k: r.train[k], False) for k in program.metric_names]
    compared += [(p.value.name, lambda r, k=p.value.name: r.params[k], True) for p in program.params]
    compared += [(v.name, lambda r, k=v.name: r.state[k], True) for v in program.state]
    rows = []
    for name, read, checked in compared:
        a, b = read(reference), read(run)
        diff, rel, scale = _differences(a, b)
        status = "unchecked" if not checked else "ok" if diff <= rtol * scale + atol else "FAIL"
        if status == "FAIL" and exact is not None:
            noise = _differences(read(exact), a)[0]
            if _differences(read(exact), b)[0] <= NOISE * noise + atol:
                status = "noise"
        rows.append(Row(name, diff, rel, status))
    return rows


def _differences(a, b) -> tuple[float, float, float]:
    """(max |a - b|, that relative to the array's scale max |a|, that scale)."""
    import numpy as np
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf"), float("inf"), 0.0
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    return diff, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf")), scale
