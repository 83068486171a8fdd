"""The inputs of tests/test_image_layers.py, and (run as a script, with keras installed and
KERAS_BACKEND=torch) the program that wrote Keras's outputs for them to
tests/data/keras_layers.npz:

    KERAS_BACKEND=torch python tests/keras_layer_values.py     # Keras 3.15.1, torch 2.13.0
"""
from pathlib import Path

import numpy as np

VALUES = Path(__file__).parent / "data" / "keras_layers.npz"


def inputs(shape, seed):
    return np.random.default_rng(seed).uniform(-1.5, 1.5, shape).astype(np.float32)


# name -> (Keras layer, its config, input shape, modelc's layer call)
CASES = {
    "conv_same_odd": ("Conv2D", dict(filters=3, kernel_size=3, padding="same"), (2, 5, 5, 2),
                      "conv2d(3, 3, padding=same)"),
    "conv_same_even_strided": ("Conv2D", dict(filters=3, kernel_size=2, strides=2, padding="same"), (2, 6, 5, 2),
                               "conv2d(3, 2, strides=2, padding=same)"),
    "conv_valid_rect": ("Conv2D", dict(filters=2, kernel_size=(3, 2), strides=(2, 3), activation="relu"),
                        (2, 7, 6, 1), "conv2d(2, [3, 2], relu, strides=[2, 3])"),
    "max_same_ragged": ("MaxPooling2D", dict(pool_size=2, padding="same"), (2, 5, 5, 2),
                        "max_pooling2d(2, padding=same)"),
    "max_overlap": ("MaxPooling2D", dict(pool_size=3, strides=2), (2, 7, 7, 2), "max_pooling2d(3, strides=2)"),
    "avg_same_ragged": ("AveragePooling2D", dict(pool_size=2, padding="same"), (2, 5, 5, 2),
                        "average_pooling2d(2, padding=same)"),
    # Not compared: pool_size=(3, 2), strides=(1, 2), padding="same" over 4x5. Keras 3.15's
    # torch backend averages the first row's windows (padded above) to values that are no
    # mean of their elements (13/6 over 0, 1, 5, 6 of an arange); test_gradients and the
    # cases above check that geometry against the reference instead.
    "global_avg": ("GlobalAveragePooling2D", {}, (2, 4, 3, 3), "global_average_pooling2d"),
    "global_max": ("GlobalMaxPooling2D", {}, (2, 4, 3, 3), "global_max_pooling2d"),
    "layer_norm": ("LayerNormalization", dict(epsilon=0.001), (2, 3, 3, 4), "layer_normalization"),
}
BATCH_NORM_SHAPE = (4, 3, 3, 2)


def _weights(layer, seed):
    """Deterministic weights for every trainable weight of a built layer (both sides use these)."""
    return [inputs(tuple(w.shape), seed + 1 + i) for i, w in enumerate(layer.trainable_weights)]


def main():
    import keras
    out = {}
    for seed, (name, (cls, config, shape, _)) in enumerate(CASES.items()):
        layer = getattr(keras.layers, cls)(**config)
        x = inputs(shape, seed)
        layer.build(shape)
        weights = _weights(layer, 10 * seed)
        for variable, value in zip(layer.trainable_weights, weights):
            variable.assign(value)
        out[f"{name}.y"] = keras.ops.convert_to_numpy(layer(x))
    bn = keras.layers.BatchNormalization()
    x = inputs(BATCH_NORM_SHAPE, 99)
    bn.build(BATCH_NORM_SHAPE)
    bn.gamma.assign(inputs((2,), 100))
    bn.beta.assign(inputs((2,), 101))
    out["bn.train_y"] = keras.ops.convert_to_numpy(bn(x, training=True))
    out["bn.moving_mean"] = keras.ops.convert_to_numpy(bn.moving_mean)
    out["bn.moving_variance"] = keras.ops.convert_to_numpy(bn.moving_variance)
    out["bn.infer_y"] = keras.ops.convert_to_numpy(bn(x, training=False))
    VALUES.parent.mkdir(exist_ok=True)
    np.savez(VALUES, **out)
    print(f"wrote {len(out)} arrays to {VALUES} (keras {keras.__version__})")


if __name__ == "__main__":
    main()
