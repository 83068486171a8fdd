"""The inputs of tests/test_formulas.py, and (run as a script, with keras installed and
KERAS_BACKEND=torch) the program that printed Keras's values for them."""
import json

import numpy as np


def f(a):
    return np.array(a, np.float32)


Y_REG = f([[0.2, -1.0, 0.5], [1.5, 0.0, -0.3]])
P_REG = f([[0.1, -0.4, 1.7], [0.9, 0.35, -0.3]])
Y_BIN = f([[0, 1, 1], [1, 0, 0]])
P_BIN = f([[0.2, 0.7, 0.4], [0.9, 0.05, 0.6]])
Z_BIN = f([[-1.2, 0.8, 3.0], [0.4, -2.5, 0.1]])
Y_CNT = f([[0, 2, 1], [3, 1, 0]])
P_CNT = f([[0.5, 1.7, 0.9], [2.2, 0.4, 0.1]])
Y_CAT = f([[0, 1, 0, 0], [0, 0, 0, 1]])
L_CAT = np.array([1, 3])
P_CAT = f([[0.1, 0.6, 0.2, 0.1], [0.3, 0.3, 0.1, 0.3]])
Z_CAT = f([[0.5, 2.0, -1.0, 0.0], [1.0, 0.2, -0.3, 1.1]])
Y_DIS = f([[0.25, 0.25, 0.5, 0.0], [0.1, 0.2, 0.3, 0.4]])

INPUTS = {k: v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, np.ndarray)}

W0 = [f([1.0, 2.0, -0.5]), f([0.3, -0.2])]
GRADS = [[f([0.5, -1.0, 0.25]), f([2.0, 0.1])], [f([0.4, -0.8, 0.5]), f([-1.0, 0.3])],
         [f([-0.2, 0.6, 0.1]), f([0.5, 0.5])]]


def main():
    import keras

    L = keras.losses
    out = {"losses": {}, "metrics": {}, "optimizers": {}}
    def put(key, value):
        out["losses"][key] = np.asarray(value, np.float64).round(8).tolist()
    put("mean_squared_error", L.mean_squared_error(Y_REG, P_REG))
    put("mean_absolute_error", L.mean_absolute_error(Y_REG, P_REG))
    put("huber", L.huber(Y_REG, P_REG))
    put("huber:delta=0.5", L.huber(Y_REG, P_REG, delta=0.5))
    put("log_cosh", L.log_cosh(Y_REG, P_REG))
    put("poisson", L.poisson(Y_CNT, P_CNT))
    put("hinge", L.hinge(Y_BIN, Z_BIN))
    put("squared_hinge", L.squared_hinge(Y_BIN, Z_BIN))
    put("cosine_similarity", L.cosine_similarity(Y_REG, P_REG))
    put("binary_crossentropy", L.binary_crossentropy(Y_BIN, P_BIN))
    put("binary_crossentropy:label_smoothing=0.2", L.binary_crossentropy(Y_BIN, P_BIN, label_smoothing=0.2))
    put("binary_crossentropy:from_logits", L.binary_crossentropy(Y_BIN, Z_BIN, from_logits=True))
    put("binary_crossentropy:from_logits,label_smoothing=0.2", L.binary_crossentropy(Y_BIN, Z_BIN, from_logits=True, label_smoothing=0.2))
    put("categorical_crossentropy", L.categorical_crossentropy(Y_CAT, P_CAT))
    put("categorical_crossentropy:label_smoothing=0.1", L.categorical_crossentropy(Y_CAT, P_CAT, label_smoothing=0.1))
    put("categorical_crossentropy:from_logits", L.categorical_crossentropy(Y_CAT, Z_CAT, from_logits=True))
    put("categorical_crossentropy:from_logits,label_smoothing=0.1", L.categorical_crossentropy(Y_CAT, Z_CAT, from_logits=True, label_smoothing=0.1))
    put("sparse_categorical_crossentropy", L.sparse_categorical_crossentropy(L_CAT, P_CAT))
    put("sparse_categorical_crossentropy:from_logits", L.sparse_categorical_crossentropy(L_CAT, Z_CAT, from_logits=True))
    put("kl_divergence", L.kl_divergence(Y_DIS, P_CAT))

    M = keras.metrics
    def metric(key, obj, y, p):
        obj.update_state(y, p)
        out["metrics"][key] = round(float(obj.result()), 8)
    metric("binary_accuracy", M.BinaryAccuracy(), Y_BIN, P_BIN)
    metric("binary_accuracy:threshold=0.65", M.BinaryAccuracy(threshold=0.65), Y_BIN, P_BIN)
    metric("categorical_accuracy", M.CategoricalAccuracy(), Y_CAT, P_CAT)
    metric("sparse_categorical_accuracy", M.SparseCategoricalAccuracy(), L_CAT, P_CAT)
    metric("top_k_categorical_accuracy:k=1", M.TopKCategoricalAccuracy(k=1), Y_CAT, P_CAT)
    metric("top_k_categorical_accuracy:k=2", M.TopKCategoricalAccuracy(k=2), Y_CAT, Z_CAT)
    metric("precision", M.Precision(), Y_BIN, P_BIN)
    metric("precision:threshold=0.65", M.Precision(thresholds=0.65), Y_BIN, P_BIN)
    metric("recall", M.Recall(), Y_BIN, P_BIN)
    metric("recall:threshold=0.65", M.Recall(thresholds=0.65), Y_BIN, P_BIN)

    O = keras.optimizers
    cases = {
        "sgd": O.SGD(learning_rate=0.1), "sgd:momentum=0.9": O.SGD(learning_rate=0.1, momentum=0.9),
        "sgd:momentum=0.9,nesterov": O.SGD(learning_rate=0.1, momentum=0.9, nesterov=True),
        "adam": O.Adam(learning_rate=0.01), "adamw:weight_decay=0.1": O.AdamW(learning_rate=0.01, weight_decay=0.1),
        "rmsprop": O.RMSprop(learning_rate=0.01), "rmsprop:momentum=0.5": O.RMSprop(learning_rate=0.01, momentum=0.5),
        "adagrad": O.Adagrad(learning_rate=0.1), "adamax": O.Adamax(learning_rate=0.01), "nadam": O.Nadam(learning_rate=0.01),
        "adam:clipnorm=0.5": O.Adam(learning_rate=0.01, clipnorm=0.5),
        "sgd:clipvalue=0.3": O.SGD(learning_rate=0.1, clipvalue=0.3),
        "sgd:global_clipnorm=0.5": O.SGD(learning_rate=0.1, global_clipnorm=0.5),
        "nadam:clipnorm=0.5": O.Nadam(learning_rate=0.01, clipnorm=0.5),
        # (the schedules' values in test_formulas.py came from ExponentialDecay(0.1, 2, 0.5),
        # the same with staircase=True, InverseTimeDecay(0.1, 1, 0.5) and CosineDecay(0.01, 2, alpha=0.1))
    }
    for key, opt in cases.items():
        ws = [keras.Variable(w.copy()) for w in W0]
        for grads in GRADS:
            opt.apply([keras.ops.convert_to_tensor(g.copy()) for g in grads], ws)
        out["optimizers"][key] = [np.asarray(w.numpy(), np.float64).round(8).tolist() for w in ws]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
