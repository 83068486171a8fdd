"""What a seed decides: the initial weights and the batch order, drawn on the host.

Both are drawn here rather than by a backend, so `numpy`, `cpu` and `cuda`
start from the same weights and see the same batches, and the same seed gives
the same weights bit for bit on the same machine. The two come from separate
streams, so re-seeding the batch order leaves the weights alone.

The batch order of an epoch is a function of the seed and the epoch's number
alone, never of a generator's history, so a run resumed from a checkpoint at
epoch 7 shuffles epoch 8 exactly as the unbroken run did (dropout masks are
likewise a function of the seed, the update number and the element).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from modelc.compiler.catalog import initialize
from modelc.errors import ModelcError


def check_seed(seed: Any) -> int:
    """`seed` as an int, or a ModelcError unless it is a whole number, 0 or more."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ModelcError(f"seed must be a whole number, 0 or more; got {seed!r}")
    return int(seed)


def initial_weights(program, seed: int | np.random.Generator) -> dict[str, np.ndarray]:
    """Every parameter drawn from one generator seeded with `seed` (or from the generator
    given, which draws on), in `program.params` order."""
    rng = np.random.default_rng(seed)      # a Generator comes back unaltered
    return {p.value.name: initialize(p.init, rng, tuple(p.value.shape), p.fan_in, p.fan_out)
            for p in program.params}


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of `n` samples in epoch number `epoch` (0-based, counted over the
    model's whole training): its own stream, keyed by the seed and the epoch, apart from the weights'."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, epoch)))
    return np.ascontiguousarray(rng.permutation(n), dtype=np.int64)
