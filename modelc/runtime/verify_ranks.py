"""`modelc verify SPEC --ranks N`: do N data-parallel processes train as one process does?

Run as every rank of the job. Rank 0 first trains the spec alone (one process,
the whole-epoch loop) for `steps` batches, in order, from the spec's seed;
then every rank trains the same steps together, each on its share of every
batch, and rank 0 compares the two runs array by array as `verify` compares
targets. Only the order of the sums differs (a batch's rows are summed in two
halves, then added), so the tolerance is tighter than between targets.
Batch normalization normalizes each rank's rows with their own statistics
(see `parallel`), so a spec with it does not match one process, by design.
"""
from __future__ import annotations

from modelc.errors import ModelcError
from modelc.runtime import parallel, training
from modelc.runtime.verify import ATOL, Comparison, VerifyReport, _rows, _train, steps_data


def verify_ranks(program, target: str, *, steps: int, batch: int | None, seed: int | None, rtol: float,
                 atol: float = ATOL, data_dir: str | None = None, base_dir: str | None = None,
                 quiet: bool = False) -> VerifyReport | None:
    """The comparison, on rank 0 (None on the others)."""
    from modelc.runtime.model import Model, positive_int
    if "," in target:
        raise ModelcError(f"--targets {target}: with --ranks, verify compares one target in N processes "
                          "with itself in one", hint="give one target, e.g. --targets cpu")
    if program.train is None:
        raise ModelcError(f"'{program.name}' has no loss, so there is no training to verify")
    group = parallel.world()
    settings = training.settings(program.spec)
    batch = positive_int(settings.batch if batch is None else batch, "batch")
    together = Model(program, target, seed=seed, data_dir=data_dir, base_dir=base_dir)
    train, evaluation = steps_data(together, positive_int(steps, "steps"), batch, quiet=quiet)
    alone = None
    if group.rank == 0:
        single = Model(program, target, seed=seed, data_dir=data_dir, base_dir=base_dir)
        single.group = parallel.SOLO
        alone = _train(single, train, evaluation, batch)
    shared = _train(together, train, evaluation, batch)
    if group.rank != 0:
        return None
    one, many = "1 process", f"{group.size} ranks"
    comparison = Comparison(f"{target}, {many}", f"{target}, {one}", shared.seconds, alone.seconds,
                            _rows(program, alone, shared, rtol, atol))
    return VerifyReport(program.spec.source.filename, [one, many], steps, batch, together.seed, steps * batch,
                        rtol, atol, [comparison])
