"""Keras's datasets, as `keras.datasets` gives them: `modelc.datasets.mnist.load_data()`."""
