"""MNIST as `keras.datasets.mnist.load_data()` returns it: uint8 images (n, 28, 28) and uint8
labels, `(x_train, y_train), (x_test, y_test)`. The files come from `data_dir`, MODELC_DATA or
modelc's cache, downloaded (and verified) on first use, like every MNIST read in modelc."""
from __future__ import annotations


def load_data(data_dir: str | None = None):
    from modelc.runtime.data.mnist import read_mnist
    arrays = read_mnist(data_dir)
    return ((arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]),
            (arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]))
