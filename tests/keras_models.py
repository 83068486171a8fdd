"""Writes tests/data/keras_models/NAME.keras and NAME.npz (inputs `x` and Keras's
`model.predict(x)` as `y`) from three small models built and trained by real Keras 3.

Run by a person with Keras installed, not by the tests (they only read the files):

    python3 -m venv /tmp/kvenv && /tmp/kvenv/bin/pip install keras jax h5py
    KERAS_BACKEND=jax /tmp/kvenv/bin/python tests/keras_models.py
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

OUT = Path(__file__).resolve().parent / "data" / "keras_models"


def mlp():
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dropout(0.3), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(4, activation="softmax")], name="mlp")
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.Adam(0.01),
                  metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 12)).astype("float32")
    return model, x, rng.integers(0, 4, 64)


def cnn():
    inputs = keras.Input((10, 10, 2))
    h = keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu")(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Conv2D(5, (3, 2), padding="same")(h)
    h = keras.layers.MaxPooling2D(2, padding="same")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(3, activation="softmax")(h)
    model = keras.Model(inputs, outputs, name="cnn")
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  metrics=[keras.metrics.CategoricalAccuracy()])
    rng = np.random.default_rng(1)
    x = rng.normal(1.5, 2.0, size=(48, 10, 10, 2)).astype("float32")      # the moving statistics move
    return model, x, keras.utils.to_categorical(rng.integers(0, 3, 48), 3)


def graph():
    inputs = keras.Input((6,), name="features")
    a = keras.layers.Dense(8, activation="relu", name="left")(inputs)
    b = keras.layers.Dense(8, activation="gelu", name="right")(inputs)
    s = keras.layers.Add(name="sum")([a, b])
    n = keras.layers.LayerNormalization()(s)
    c = keras.layers.Concatenate()([n, a])
    outputs = keras.layers.Dense(2, activation="sigmoid", name="out")(c)
    model = keras.Model(inputs, outputs, name="graph")
    model.compile(loss=keras.losses.BinaryCrossentropy(label_smoothing=0.05),
                  optimizer=keras.optimizers.RMSprop(0.005), metrics=["accuracy", "mae"])
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 6)).astype("float32")
    return model, x, rng.integers(0, 2, (40, 2)).astype("float32")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    for make in (mlp, cnn, graph):
        model, x, y = make()
        model.fit(x, y, epochs=3, batch_size=16, verbose=0)
        model.save(OUT / f"{make.__name__}.keras")
        probe = x[:8]
        np.savez(OUT / f"{make.__name__}.npz", x=probe, y=model.predict(probe, verbose=0))
        print(make.__name__, keras.__version__, (OUT / f"{make.__name__}.keras").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
