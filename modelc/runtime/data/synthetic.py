"""Synthetic data sets: small, deterministic problems for tests, examples and quick checks.

Each generator draws everything from one `numpy.random.default_rng(seed)` in
a fixed order, shuffles, and holds out the last ceil(samples * test) samples
as the test split, so the same options give the same arrays on every machine.
The rules are chosen so a small network can learn them well but not trivially.
"""
from __future__ import annotations

import math

import numpy as np

from modelc.arrays import check_size
from .core import Dataset, LoadContext, Splits, one_hot


def test_size(samples: int, test: float) -> int:
    """How many samples the test split gets (ceil, like scikit-learn), 0 when test is 0."""
    return math.ceil(samples * test) if test > 0 else 0


def _split(x: np.ndarray, y: np.ndarray, test: float, name: str) -> Splits:
    n_test = test_size(len(x), test)
    cut = len(x) - n_test
    train = Dataset(x[:cut], y[:cut], f"{name}.train")
    return Splits(train, Dataset(x[cut:], y[cut:], f"{name}.test") if n_test else None)


def _size(dims: tuple) -> int:
    return math.prod(dims)


def _check_memory(name: str, opts: dict, classes: int = 0) -> None:
    """Refuse, before drawing anything, a data set whose arrays would not fit (exact integers).

    Counted: the float64 features and the two temporaries of their size the generators
    make (24 bytes a value), their float32 copy (4), labels and their permutation (16 a
    sample), and per class two float64 values a sample (scores and noise, or one-hot rows)."""
    samples, dims = opts["samples"], opts["features"]
    f = _size(dims)
    need = samples * f * 28 + samples * 16 + classes * (samples * 16 + f * 8)
    what = f"{name}: {samples} samples of {'x'.join(map(str, dims))} features"
    check_size(need, what + (f" and {classes} classes" if classes else ""), "ask for fewer samples or features")


def _shaped(x: np.ndarray, dims: tuple) -> np.ndarray:
    """Samples of `features=[8, 8, 1]` as images: each row of x reshaped to dims."""
    return x.astype(np.float32).reshape((len(x),) + tuple(dims))


def _labels(y: np.ndarray, classes: int, onehot: bool) -> np.ndarray:
    return one_hot(y, classes) if onehot else y.astype(np.int64)


def load_blobs(opts: dict, ctx: LoadContext | None = None) -> Splits:
    """Gaussian blobs as scikit-learn's make_blobs: centres uniform in [-10, 10]^features, label = blob."""
    _check_memory("blobs", opts, opts["centers"])
    rng = np.random.default_rng(opts["seed"])
    n, k, f = opts["samples"], opts["centers"], _size(opts["features"])
    centres = rng.uniform(-10.0, 10.0, size=(k, f))
    counts = [n // k + (1 if i < n % k else 0) for i in range(k)]
    y = np.repeat(np.arange(k), counts)
    x = centres[y] + opts["std"] * rng.standard_normal((n, f))
    order = rng.permutation(n)
    return _split(_shaped(x[order], opts["features"]), _labels(y[order], k, opts["onehot"]), opts["test"], "blobs")


def load_random(opts: dict, ctx: LoadContext | None = None) -> Splits:
    """N(0, 1) features; labels = argmax of a fixed random linear teacher plus noise.

    The noise (std 0.5 per logit against logit spreads of about sqrt(features))
    makes roughly one label in ten disagree with the teacher: learnable to
    about 0.9 accuracy with the default sizes, not to 1.0.
    """
    _check_memory("random", opts, opts["classes"])
    rng = np.random.default_rng(opts["seed"])
    n, f, c = opts["samples"], _size(opts["features"]), opts["classes"]
    x = rng.standard_normal((n, f))
    w = rng.standard_normal((f, c))
    b = 0.5 * rng.standard_normal(c)
    noise = 0.5 * np.sqrt(f / 10.0) * rng.standard_normal((n, c))
    y = np.argmax(x @ w + b + noise, axis=1)
    return _split(_shaped(x, opts["features"]), _labels(y, c, opts["onehot"]), opts["test"], "random")


def load_regression(opts: dict, ctx: LoadContext | None = None) -> Splits:
    """y = sin(2 x.a) + 0.5 x.b + noise, x uniform in [-2, 2]^features; y float32 (n, 1)."""
    _check_memory("regression", opts)
    rng = np.random.default_rng(opts["seed"])
    n, f = opts["samples"], _size(opts["features"])
    x = rng.uniform(-2.0, 2.0, size=(n, f))
    a = rng.standard_normal(f) / np.sqrt(f)
    b = rng.standard_normal(f) / np.sqrt(f)
    y = np.sin(2.0 * (x @ a)) + 0.5 * (x @ b) + opts["noise"] * rng.standard_normal(n)
    return _split(_shaped(x, opts["features"]), y.astype(np.float32)[:, None], opts["test"], "regression")


def load_binary(opts: dict, ctx: LoadContext | None = None) -> Splits:
    """N(0, 1) features; y = 1 inside the ball holding half the points, else 0: float32 (n, 1).

    A ball is not linearly separable, so a hidden layer is needed: a fair test
    for binary cross-entropy specs. Balanced by construction (median radius).
    """
    _check_memory("binary", opts)
    rng = np.random.default_rng(opts["seed"])
    n, f = opts["samples"], _size(opts["features"])
    x = rng.standard_normal((n, f))
    r = np.einsum("ij,ij->i", x, x)
    y = (r < np.median(r)).astype(np.float32)[:, None]
    return _split(_shaped(x, opts["features"]), y, opts["test"], "binary")
