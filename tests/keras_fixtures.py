"""Writing `.keras` files without Keras, as Keras 3 writes them (verified against Keras 3.15's
files in tests/data/keras_models): a zip of `metadata.json`, `config.json` and
`model.weights.h5`, whose layers' variables sit under `layers/<class name in snake case>`
(`_1`, `_2`, ... for the second and later layer of a class) in `vars/0`, `vars/1`, ..."""
from __future__ import annotations

import io
import json
import re
import zipfile

import h5py
import numpy as np

DTYPE = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


# the group names Keras 3.15 gives these classes (its naming.to_snake_case), as read from its files
_SNAKE = {"Conv2D": "conv2d", "MaxPooling2D": "max_pooling2d", "AveragePooling2D": "average_pooling2d",
          "GlobalAveragePooling2D": "global_average_pooling2d", "GlobalMaxPooling2D": "global_max_pooling2d",
          "ReLU": "re_lu", "LeakyReLU": "leaky_re_lu", "ELU": "elu"}


def snake(class_name: str) -> str:
    """BatchNormalization -> batch_normalization; the classes with capitals in a row from the table."""
    return _SNAKE.get(class_name) or "_".join(w.lower() for w in re.findall(r"[A-Z][a-z0-9]*", class_name))


def layer(class_name: str, name: str, **config) -> dict:
    return {"module": "keras.layers", "class_name": class_name, "registered_name": None,
            "config": {"name": name, "trainable": True, "dtype": DTYPE, **config}}


def input_layer(name: str, shape) -> dict:
    entry = layer("InputLayer", name, batch_shape=[None, *shape], sparse=False, ragged=False, optional=False)
    entry["config"]["dtype"] = "float32"
    entry["config"].pop("trainable")
    return entry


def tensor(name: str) -> dict:
    return {"class_name": "__keras_tensor__", "config": {"shape": None, "dtype": "float32",
                                                          "keras_history": [name, 0, 0]}}


def _h5(entries_weights) -> bytes:
    buffer = io.BytesIO()
    used: dict[str, int] = {}
    with h5py.File(buffer, "w") as h5:
        h5.create_group("vars")
        for entry, weights in entries_weights:
            base = snake(entry["class_name"])
            path = base if base not in used else f"{base}_{used[base] + 1}"
            used[base] = used.get(base, -1) + 1
            group = h5.create_group(f"layers/{path}/vars")
            for i, w in enumerate(weights):
                group.create_dataset(str(i), data=np.asarray(w, np.float32))
    return buffer.getvalue()


def write(path, config: dict, entries_weights, metadata=None, members=None) -> None:
    """The zip; `members` replaces or removes (None) a member's bytes, for damaged files."""
    files = {"metadata.json": json.dumps(metadata or {"keras_version": "3.15.1", "date_saved": "x"}).encode(),
             "config.json": json.dumps(config).encode(), "model.weights.h5": _h5(entries_weights)}
    files.update(members or {})
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            if data is not None:
                z.writestr(name, data)


def sequential(path, input_shape, layers, compile_config=None, **kw) -> None:
    """`layers`: (layer entry, its variables) in order, after an InputLayer of `input_shape`."""
    config = {"module": "keras", "class_name": "Sequential", "registered_name": None,
              "config": {"name": "sequential", "trainable": True, "dtype": DTYPE,
                         "layers": [input_layer("input_layer", input_shape)] + [e for e, _ in layers]},
              "compile_config": compile_config or {}}
    write(path, config, layers, **kw)


TRAINING_ARG = ("Dropout", "BatchNormalization")     # the layers whose call takes `training`


def functional(path, input_shape, nodes, output, compile_config=None, inputs=("input_layer",), **kw) -> None:
    """`nodes`: (layer entry, the names it reads, its variables), as Keras's inbound nodes."""
    entries = []
    for name in inputs:
        entry = input_layer(name, input_shape)
        entries.append(dict(entry, name=name, inbound_nodes=[]))
    for entry, sources, _ in nodes:
        arg = tensor(sources[0]) if len(sources) == 1 else [tensor(s) for s in sources]
        # Keras 3 records `training: false` on the calls of layers that take it, as the graph was built
        kwargs = {"training": False} if entry["class_name"] in TRAINING_ARG else {}
        entries.append(dict(entry, name=entry["config"]["name"], inbound_nodes=[{"args": [arg], "kwargs": kwargs}]))
    config = {"module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional",
              "config": {"name": "functional", "trainable": True, "layers": entries,
                         "input_layers": [[n, 0, 0] for n in inputs] if len(inputs) > 1 else [inputs[0], 0, 0],
                         "output_layers": [output, 0, 0]},
              "compile_config": compile_config or {}}
    write(path, config, [(e, w) for e, _, w in nodes], **kw)
