"""The edge cases of tests/test_losses.py and (run as a script, in a virtual environment
with keras installed) the program that computed Keras 3's values for them, into
tests/data/keras3_loss_edges.npz:

    KERAS_BACKEND=torch /tmp/kvenv/bin/python tests/keras3_loss_edges.py           # writes the file
    KERAS_BACKEND=jax /tmp/kvenv/bin/python tests/keras3_loss_edges.py --compare   # another backend, same values?

Predictions exactly 0 and 1 and within 1e-8 of them, rows summing to other than 1,
all-zero rows, class labels 0 and K-1, logits of +-1e4, negative values, y_true ==
y_pred, and random batches. Each case is (loss, options, y_true, y_pred); Keras's value
is the per-sample loss (keras.losses.<name>, float32). modelc is imported nowhere here.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

FILE = Path(__file__).parent / "data" / "keras3_loss_edges.npz"
K = 4
TINY = 1e-8


def f(a):
    return np.array(a, np.float32)


def _probability_rows():
    rng = np.random.default_rng(11)
    edges = f([[1, 0, 0, 0], [0, 0, 0, 1], [0.5, 0.5, 0, 0], [TINY, 1 - TINY, 0, 0], [TINY, TINY, TINY, 1 - 3 * TINY],
               [0.2, 0.4, 0.6, 0.8],        # sums to 2
               [0.05, 0.1, 0.05, 0.1],      # sums to 0.3
               [1, 1, 1, 1], [1e-7, 1e-7, 1e-7, 1e-7], [0.25, 0.25, 0.25, 0.25], [1, TINY, 0, 1e-7]])
    random = rng.dirichlet(np.ones(K), size=5).astype(np.float32)
    return np.concatenate([edges, random])


def _cases():
    rng = np.random.default_rng(7)
    cases = []

    def add(name, y, p, **options):
        y = np.asarray(y)
        cases.append((name, options, y if y.dtype.kind == "i" else f(y), f(p)))

    # binary: every 0/1 label against every edge probability
    edge = f([0, 1, TINY, 1 - TINY, 1e-7, 1 - 1e-7, 1e-6, 0.5])
    y = np.repeat(f([[0], [1]]), len(edge), axis=1)
    p = np.tile(edge, (2, 1))
    add("binary_crossentropy", y, p)
    add("binary_crossentropy", y, p, label_smoothing=0.2)
    add("binary_crossentropy", y, y)
    z = f([[-1e4, 1e4, -100, 100, -20, 20, 0, -1e-8], [1e4, -1e4, 100, -100, 17, -17, 0, 1e-8]])
    add("binary_crossentropy", y, z, from_logits=True)
    add("binary_crossentropy", y, z, from_logits=True, label_smoothing=0.2)
    yb = rng.integers(0, 2, (6, 5)).astype(np.float32)
    add("binary_crossentropy", yb, rng.uniform(0, 1, (6, 5)))
    add("binary_crossentropy", yb, rng.normal(0, 4, (6, 5)), from_logits=True)

    # categorical and sparse: labels 0 and K-1 (and between) against each probability row
    rows = _probability_rows()
    labels = np.arange(len(rows)) % K
    labels[:2] = [0, K - 1]            # right and certain at both class edges
    labels[2:4] = [K - 1, 0]           # wrong and certain, and wrong at 1 - 1e-8
    onehot = np.eye(K, dtype=np.float32)[labels]
    add("categorical_crossentropy", onehot, rows)
    add("categorical_crossentropy", onehot, rows, label_smoothing=0.1)
    add("categorical_crossentropy", onehot, onehot)
    add("categorical_crossentropy", f([[0, 0, 0, 0]]), f([[0, 0, 0, 0]]))     # all-zero rows: 0/0 in Keras
    add("categorical_crossentropy", f([[0, 1, 0, 0]]), f([[0, 0, 0, 0]]))
    add("sparse_categorical_crossentropy", labels, rows)
    add("sparse_categorical_crossentropy", np.array([K - 1]), f([[0, 0, 0, 0]]))
    logits = f([[1e4, -1e4, 0, 0], [-1e4, 0, 0, 1e4], [1e4, 1e4, -1e4, -1e4], [0, 0, 0, 0],
                [1e4, 1e4, 1e4, 1e4], [-1e4, -1e4, -1e4, -1e4], [30, -30, 5, 88], [1e-8, 0, -1e-8, 0]])
    zl = np.array([0, 0, K - 1, K - 1, 2, 1, K - 1, 0])
    zo = np.eye(K, dtype=np.float32)[zl]
    add("categorical_crossentropy", zo, logits, from_logits=True)
    add("categorical_crossentropy", zo, logits, from_logits=True, label_smoothing=0.1)
    add("sparse_categorical_crossentropy", zl, logits, from_logits=True)
    zr = rng.normal(0, 3, (6, K))
    add("sparse_categorical_crossentropy", rng.integers(0, K, 6), zr, from_logits=True)

    # distributions: zeros on either side, rows not summing to 1, values above 1, y == p
    ydis = np.concatenate([f([[0, 0, 0, 1], [0.5, 0.5, 0, 0], [0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25],
                              [TINY, 0, 1, 0]]), rng.dirichlet(np.ones(K), size=3).astype(np.float32)])
    pdis = np.concatenate([f([[1, 0, 0, 0], [0.5, 0.5, 0, 0], [0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0],
                              [0, 2, 1.5, TINY]]), rng.dirichlet(np.ones(K), size=3).astype(np.float32)])
    add("kl_divergence", ydis, pdis)
    add("kl_divergence", ydis, ydis)

    # counts: exact zeros, tiny and negative predictions and targets
    add("poisson", f([[0, 1, 2, 0], [3, 0, 1, 5], [0, 0, 0, 0], [-1, 2, 0.5, 1], [1, 1, 1, 1]]),
        f([[0, 0, 1e-8, 2], [3, 1e-7, 1, 5], [0, 0, 0, 0], [0.5, 2, 0.5, 1], [-0.5, -1e-8, 1, 2]]))
    add("poisson", rng.integers(0, 5, (5, K)).astype(np.float32), rng.uniform(0, 4, (5, K)))

    # regression: y == p, negative and large values, errors at huber's delta
    yr = f([[0, 0, 0, 0], [-3, 2, -1e4, 1e4], [1, -1, 0.5, -0.5], [1e-8, -1e-8, 0, 1], [-2, -4, -6, 50]])
    pr = f([[0, 0, 0, 0], [-3, 2, -1e4, 1e4], [2, -2, -0.5, 0.5], [0, 0, 1e-8, 1], [-2.5, 4, -7, -50]])
    rr = rng.normal(0, 2, (5, K))
    for name in ("mean_squared_error", "mean_absolute_error", "huber", "log_cosh"):
        add(name, yr, pr)
        add(name, rr, rng.normal(0, 2, (5, K)))
    add("huber", yr, pr, delta=0.5)

    # margins: -1/1 and 0/1 batches (Keras converts a batch of only 0s and 1s to -1/1),
    # predictions at the margin (+-1) and at 0
    pm = f([[1, -1, 0, 1e-8], [-1, 1, 2, -1e4], [0.5, -0.5, 1 - 1e-7, 1e4]])
    ysigned = f([[1, -1, 1, -1], [1, -1, -1, 1], [1, 1, -1, -1]])
    for name in ("hinge", "squared_hinge"):
        add(name, ysigned, pm)
        add(name, (ysigned + 1) / 2, pm)
        add(name, ysigned, ysigned)

    # cosine: zero vectors on either side, norms below epsilon, y == p and y == -p
    yc = f([[0, 0, 0, 0], [1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [TINY, 0, 0, 0], [1e-4, 1e-4, 0, 0], [3, -1, 0, 2]])
    pc = f([[1, 2, 3, 4], [0, 0, 0, 0], [1, 2, 3, 4], [-1, -2, -3, -4], [1, 0, 0, 0], [1e-4, -1e-4, 1e-8, 0],
            [-1e4, 1e4, 5, 0]])
    add("cosine_similarity", yc, pc)
    add("cosine_similarity", rr, rng.normal(0, 2, (5, K)))
    return cases


def _keras_values(cases):
    import keras

    out = []
    for name, options, y, p in cases:
        out.append(np.asarray(getattr(keras.losses, name)(y, p, **options), np.float32))
    return out


def main():
    import keras

    cases = _cases()
    values = _keras_values(cases)
    if "--compare" in sys.argv:
        stored = np.load(FILE)
        for i, (name, options, _, _) in enumerate(cases):
            diff = np.abs(values[i].astype(np.float64) - stored[f"{i}.keras"])
            print(f"{i:2d} {name} {options}: largest difference {np.nanmax(diff, initial=0):.3g}, "
                  f"NaN in the same places: {np.array_equal(np.isnan(values[i]), np.isnan(stored[f'{i}.keras']))}")
        return
    arrays = {"about": np.array(json.dumps({"keras": keras.__version__, "backend": keras.backend.backend()}))}
    for i, (name, options, y, p) in enumerate(cases):
        arrays[f"{i}.case"] = np.array(json.dumps([name, options]))
        arrays[f"{i}.y"], arrays[f"{i}.p"], arrays[f"{i}.keras"] = y, p, values[i]
    np.savez_compressed(FILE, **arrays)
    print(f"wrote {len(cases)} cases to {FILE}")


if __name__ == "__main__":
    main()
