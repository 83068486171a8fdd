"""Lowering each primitive to Numba-compiled Python source: one table, keyed by primitive.

A lowering gets the op and a `Names` helper and returns source lines that run
inside the batch loop of a generated `@njit` function. Arrays are
preallocated buffers (sliced to the batch size `n`), scalars are locals.
Every number in the output comes from the IR (attributes are parsed values,
emitted with repr); every variable name is made here from value ids, so no
spec text reaches the generated code.

Semantics are the NumPy references' in `primitives.py`, in float32 and in the
same order of operations, so the cpu target agrees with the numpy target to
the last few bits.
"""
from __future__ import annotations

import math

from modelc.compiler import elementwise
from modelc.compiler.ir import BATCH, Op, Value
from modelc.compiler.primitives import EPSILON

LOWERINGS: dict = {}


def lowering(*names):
    def register(fn):
        for name in names:
            LOWERINGS[name] = fn
        return fn
    return register


def f32(value: float) -> str:
    """A float32 literal from a parsed number (never from text)."""
    value = float(value)
    if math.isinf(value) or math.isnan(value):
        raise ValueError(f"non-finite constant {value}")
    return f"f32({value!r})"


class Names:
    """Variable names and static sizes for one generated function."""

    def __init__(self):
        self.names: dict[int, str] = {}

    def __call__(self, value: Value) -> str:
        return self.names.setdefault(value.id, f"v{value.id}")

    @staticmethod
    def dim(d) -> str:
        return "n" if d == BATCH else str(int(d))

    def size(self, value: Value) -> str:
        """Number of elements, as source."""
        dims = [self.dim(d) for d in value.shape] or ["1"]
        static = 1
        dynamic = []
        for d in dims:
            if d == "n":
                dynamic.append(d)
            else:
                static *= int(d)
        return " * ".join(dynamic + [str(static)]) if dynamic else str(static)

    def rows_cols(self, value: Value) -> tuple[str, int]:
        """Viewed as 2-D: (rows as source, last dimension)."""
        last = int(value.shape[-1])
        rows = [self.dim(d) for d in value.shape[:-1]]
        return (" * ".join(rows) if rows else "1"), last

    def flat(self, value: Value) -> str:
        """The value as 1-D (a reshape only when it is not already; each one costs compile time)."""
        if value.rank == 1:
            return self(value)
        return f"{self(value)}.reshape({self.size(value)})"

    def mat(self, value: Value) -> str:
        """The value as 2-D (rows, last dimension)."""
        if value.rank == 2:
            return self(value)
        rows, cols = self.rows_cols(value)
        return f"{self(value)}.reshape(({rows}, {cols}))"


def _zero(array: str, size) -> list[str]:
    """Zero a 1-D array with a loop: Numba compiles slice assignment slowly (seconds per type)."""
    return [f"for i in range({size}):", f"    {array}[i] = 0"]


def _activation(fn: str, attrs: dict, x: str, y: str | None = None, derivative=False) -> str:
    act = elementwise.ACTIVATIONS[fn]
    names = {"x": x, **{k: f32(attrs.get(k, v)) for k, v in act.params.items()}}
    if y is not None:
        names["y"] = y
    return elementwise.to_scalar_source(act.derivative if derivative else act.forward, names)


# ---------------------------------------------------------------- linear algebra

@lowering("matmul")
def _matmul(op: Op, v: Names, ahead):
    """BLAS for every product, transposes passed as views. Measured (bench/RESULTS.md):
    our own loops lost even for the 10-wide products of MNIST and for 2-3-unit layers."""
    a, b = op.inputs
    A = f"{v(a)}.T" if op.attrs.get("ta") else v(a)
    B = f"{v(b)}.T" if op.attrs.get("tb") else v(b)
    return [f"np.dot({A}, {B}, {v(op.out)})"]


@lowering("bias_add")
def _bias_add(op: Op, v: Names, ahead):
    x, b = op.inputs
    rows, cols = v.rows_cols(x)
    z = op.out
    fused = ahead(lambda nxt: nxt.prim == "act" and nxt.inputs[0] is z)
    lines = [f"_x = {v.mat(x)}", f"_z = {v.mat(z)}"]
    body = [f"        t = _x[i, j] + {v(b)}[j]", "        _z[i, j] = t"]
    if fused is not None:   # bias + activation in one pass
        lines.append(f"_y = {v.mat(fused.out)}")
        body.append(f"        _y[i, j] = {_activation(fused.attrs['fn'], fused.attrs, 't')}")
    return lines + [f"for i in range({rows}):", f"    for j in range({cols}):"] + body


@lowering("sum_to_last")
def _sum_to_last(op: Op, v: Names, ahead):
    (x,) = op.inputs
    rows, cols = v.rows_cols(x)
    return [f"_x = {v.mat(x)}"] + _zero(v(op.out), cols) + [
            f"for i in range({rows}):", f"    for j in range({cols}):",
            f"        {v(op.out)}[j] += _x[i, j]"]


# ---------------------------------------------------------------- structure

@lowering("reshape")
def _reshape(op: Op, v: Names, ahead):
    shape = ", ".join(v.dim(d) for d in op.out.shape)
    return [f"{v(op.out)} = {v(op.inputs[0])}.reshape(({shape},))"]


@lowering("add")
def _add(op: Op, v: Names, ahead):
    size = v.size(op.out)
    lines = [f"_o = {v.flat(op.out)}"] + [f"_a{i} = {v.flat(x)}" for i, x in enumerate(op.inputs)]
    total = " + ".join(f"_a{i}[i]" for i in range(len(op.inputs)))
    return lines + [f"for i in range({size}):", f"    _o[i] = {total}"]


@lowering("mul")
def _mul(op: Op, v: Names, ahead):
    a, b = op.inputs
    return [f"_o = {v.flat(op.out)}", f"_a = {v.flat(a)}", f"_b = {v.flat(b)}",
            f"for i in range({v.size(op.out)}):", "    _o[i] = _a[i] * _b[i]"]


def _outer_inner(value: Value, axis: int, names: Names) -> tuple[str, int]:
    outer = [names.dim(d) for d in value.shape[:axis]]
    inner = 1
    for d in value.shape[axis + 1:]:
        inner *= int(d)
    return " * ".join(outer) if outer else "1", inner


@lowering("concat")
def _concat(op: Op, v: Names, ahead):
    axis = op.attrs["axis"]
    out = op.out
    outer, inner = _outer_inner(out, axis, v)
    width = int(out.shape[axis]) * inner
    lines = [f"_o = {v(out)}.reshape(({outer}, {width}))"]
    offset = 0
    for x in op.inputs:
        part = int(x.shape[axis]) * inner
        lines += [f"_x = {v(x)}.reshape(({outer}, {part}))",
                  f"for i in range({outer}):",
                  f"    for j in range({part}):",
                  f"        _o[i, {offset} + j] = _x[i, j]"]
        offset += part
    return lines


@lowering("slice")
def _slice(op: Op, v: Names, ahead):
    (x,) = op.inputs
    axis, start = op.attrs["axis"], op.attrs["start"]
    outer, inner = _outer_inner(x, axis, v)
    width = int(x.shape[axis]) * inner
    part = int(op.out.shape[axis]) * inner
    return [f"_x = {v(x)}.reshape(({outer}, {width}))",
            f"_o = {v(op.out)}.reshape(({outer}, {part}))",
            f"for i in range({outer}):",
            f"    for j in range({part}):",
            f"        _o[i, j] = _x[i, {start * inner} + j]"]


@lowering("dropout")
def _dropout(op: Op, v: Names, ahead):
    x, step = op.inputs
    y, mask = op.outputs
    rate = float(op.attrs["rate"])
    return [f"_x = {v.flat(x)}", f"_y = {v.flat(y)}", f"_m = {v.flat(mask)}",
            f"for i in range({v.size(x)}):",
            f"    keep = f32(1.0) if dropout_uniform({int(op.attrs['seed'])}, {v(step)}, i) >= {rate!r} else f32(0.0)",
            f"    _m[i] = keep / {f32(1.0 - rate)}",
            "    _y[i] = _x[i] * _m[i]"]


# ---------------------------------------------------------------- activations

@lowering("act")
def _act(op: Op, v: Names, ahead):
    (x,) = op.inputs
    return [f"_x = {v.flat(x)}", f"_y = {v.flat(op.out)}",
            f"for i in range({v.size(x)}):",
            f"    _y[i] = {_activation(op.attrs['fn'], op.attrs, '_x[i]')}"]


@lowering("act_grad")
def _act_grad(op: Op, v: Names, ahead):
    g, x, y = op.inputs
    rows, cols = v.rows_cols(x)
    out = op.out
    bias = ahead(lambda nxt: nxt.prim == "sum_to_last" and nxt.inputs[0] is out)
    deriv = _activation(op.attrs["fn"], op.attrs, "_x[i, j]", "_y[i, j]", derivative=True)
    lines = [f"_g = {v.mat(g)}", f"_x = {v.mat(x)}", f"_y = {v.mat(y)}", f"_o = {v.mat(out)}"]
    body = [f"        t = _g[i, j] * ({deriv})", "        _o[i, j] = t"]
    if bias is not None:   # the bias gradient accumulates in the same pass
        lines += _zero(v(bias.out), cols)
        body.append(f"        {v(bias.out)}[j] += t")
    return lines + [f"for i in range({rows}):", f"    for j in range({cols}):"] + body


@lowering("softmax", "log_softmax")
def _softmax(op: Op, v: Names, ahead):
    (x,) = op.inputs
    rows, cols = v.rows_cols(x)
    t = f32(op.attrs.get("temperature", 1.0))
    head = [f"_x = {v.mat(x)}", f"_y = {v.mat(op.out)}",
            f"for i in range({rows}):",
            "    top = _x[i, 0]",
            f"    for j in range(1, {cols}):",
            "        top = max(top, _x[i, j])",
            "    total = f32(0.0)"]
    # z = x / T, as the reference divides before subtracting the max
    if op.prim == "softmax":
        return head + [f"    for j in range({cols}):",
                       f"        e = math.exp(_x[i, j] / {t} - top / {t})",
                       "        _y[i, j] = e",
                       "        total += e",
                       f"    for j in range({cols}):",
                       "        _y[i, j] = _y[i, j] / total"]
    return head + [f"    for j in range({cols}):",
                   f"        total += math.exp(_x[i, j] / {t} - top / {t})",
                   "    lse = math.log(total)",
                   f"    for j in range({cols}):",
                   f"        _y[i, j] = (_x[i, j] / {t} - top / {t}) - lse"]


@lowering("softmax_grad", "log_softmax_grad")
def _softmax_grad(op: Op, v: Names, ahead):
    g, y = op.inputs
    rows, cols = v.rows_cols(y)
    t = f32(op.attrs.get("temperature", 1.0))
    lines = [f"_g = {v.mat(g)}", f"_y = {v.mat(y)}", f"_o = {v.mat(op.out)}",
             f"for i in range({rows}):", "    s = f32(0.0)", f"    for j in range({cols}):"]
    if op.prim == "softmax_grad":
        return lines + ["        s += _g[i, j] * _y[i, j]", f"    for j in range({cols}):",
                        f"        _o[i, j] = _y[i, j] * (_g[i, j] - s) / {t}"]
    return lines + ["        s += _g[i, j]", f"    for j in range({cols}):",
                    f"        _o[i, j] = (_g[i, j] - math.exp(_y[i, j]) * s) / {t}"]


# ---------------------------------------------------------------- batch mean and constants

@lowering("mean")
def _mean(op: Op, v: Names, ahead):
    (x,) = op.inputs
    return [f"acc = 0.0", f"for i in range(n):", f"    acc += {v(x)}[i]",
            f"{v(op.out)} = f32(acc / n)"]


@lowering("mean_grad")
def _mean_grad(op: Op, v: Names, ahead):
    g, x = op.inputs
    return [f"for i in range(n):", f"    {v(op.out)}[i] = {v(g)} / f32(n)"]


@lowering("constant")
def _constant(op: Op, v: Names, ahead):
    return [f"{v(op.out)} = {f32(op.attrs['value'])}"]


# ---------------------------------------------------------------- losses and metrics
# Per-sample loops over (rows, K); `g` is the per-sample incoming gradient.

EPS = f32(EPSILON)
ONE_M_EPS = f32(1 - EPSILON)


def _pairs(op: Op, v: Names, grad=False):
    y, p = op.inputs[0], op.inputs[1]
    rows, k = v.rows_cols(p)
    lines = [f"_y = {v.mat(y)}", f"_p = {v.mat(p)}"]
    if grad:
        lines += [f"_g = {v(op.inputs[2])}", f"_o = {v.mat(op.out)}"]
    else:
        lines += [f"_o = {v(op.out)}"]
    return lines, rows, k


def _elementwise_loss(term: str, grad_term: str):
    """Losses that are a mean over the sample of a function of (y, p)."""
    def forward(op, v, ahead):
        lines, rows, k = _pairs(op, v)
        return lines + [f"for i in range({rows}):", "    acc = f32(0.0)",
                        f"    for j in range({k}):",
                        "        e = _p[i, j] - _y[i, j]",
                        f"        acc += {term.format(**_opts(op))}",
                        f"    _o[i] = acc / f32({k})"]

    def backward(op, v, ahead):
        lines, rows, k = _pairs(op, v, grad=True)
        return lines + [f"for i in range({rows}):",
                        f"    for j in range({k}):",
                        "        e = _p[i, j] - _y[i, j]",
                        f"        _o[i, j] = _g[i] * ({grad_term.format(**_opts(op))}) / f32({k})"]
    return forward, backward


def _opts(op):
    return {"delta": f32(op.attrs.get("delta", 1.0))}


for _name, _term, _grad in [
    ("mean_squared_error", "e * e", "f32(2.0) * e"),
    ("mean_absolute_error", "abs(e)", "(f32(1.0) if e > 0 else (f32(-1.0) if e < 0 else f32(0.0)))"),
    ("huber", "(f32(0.5) * e * e if abs(e) <= {delta} else {delta} * abs(e) - f32(0.5) * {delta} * {delta})",
     "min(max(e, -{delta}), {delta})"),
]:
    LOWERINGS[_name], LOWERINGS[_name + "_grad"] = _elementwise_loss(_term, _grad)


def _smoothing(op: Op, binary: bool, k: int) -> tuple[str, str]:
    """Scale and shift of smoothed labels: y' = y * a + b."""
    ls = float(op.attrs.get("label_smoothing", 0.0))
    if not ls:
        return "", ""
    shift = 0.5 * ls if binary else ls / k
    return f" * {f32(1 - ls)}", f" + {f32(shift)}"


@lowering("binary_crossentropy")
def _bce(op: Op, v: Names, ahead):
    lines, rows, k = _pairs(op, v)
    scale, shift = _smoothing(op, True, k)
    if op.attrs.get("from_logits"):
        term = "max(z, f32(0.0)) - z * t + math.log1p(math.exp(-abs(z)))"
    else:
        # epsilon inside the logs after clipping, as tf.keras (the DESIGN.md reference values)
        term = f"-(t * math.log(q + {EPS}) + (f32(1.0) - t) * math.log(f32(1.0) - q + {EPS}))"
    return lines + [f"for i in range({rows}):", "    acc = f32(0.0)", f"    for j in range({k}):",
                    f"        t = _y[i, j]{scale}{shift}", "        z = _p[i, j]",
                    f"        q = min(max(z, {EPS}), {ONE_M_EPS})",
                    f"        acc += {term}", f"    _o[i] = acc / f32({k})"]


@lowering("binary_crossentropy_grad")
def _bce_grad(op: Op, v: Names, ahead):
    lines, rows, k = _pairs(op, v, grad=True)
    scale, shift = _smoothing(op, True, k)
    if op.attrs.get("from_logits"):
        d = "sigmoid_scalar(z) - t"
    else:
        d = (f"((f32(1.0) - t) / (f32(1.0) - q + {EPS}) - t / (q + {EPS}) "
             f"if z > {EPS} and z < {ONE_M_EPS} else f32(0.0))")
    return lines + [f"for i in range({rows}):", f"    for j in range({k}):",
                    f"        t = _y[i, j]{scale}{shift}", "        z = _p[i, j]",
                    f"        q = min(max(z, {EPS}), {ONE_M_EPS})",
                    f"        _o[i, j] = _g[i] * ({d}) / f32({k})"]


def _label(op: Op, sparse: bool, scale="", shift="") -> str:
    """Source for the (smoothed) target of class j in row i."""
    if sparse:
        return "(f32(1.0) if _y[i] == j else f32(0.0))"
    return f"(_y[i, j]{scale}{shift})"


def _categorical(sparse: bool):
    def forward(op, v, ahead):
        y, p = op.inputs
        rows, k = v.rows_cols(p)
        scale, shift = ("", "") if sparse else _smoothing(op, False, k)
        label = _label(op, sparse, scale, shift)
        t = f32(op.attrs.get("temperature", 1.0))
        lines = [f"_y = {v(y) if sparse else v.mat(y)}", f"_p = {v.mat(p)}", f"_o = {v(op.out)}",
                 f"for i in range({rows}):"]
        if op.attrs.get("from_logits"):
            return lines + ["    top = _p[i, 0]", f"    for j in range(1, {k}):", "        top = max(top, _p[i, j])",
                            "    total = f32(0.0)", f"    for j in range({k}):",
                            f"        total += math.exp(_p[i, j] / {t} - top / {t})",
                            "    lse = math.log(total)", "    acc = f32(0.0)", f"    for j in range({k}):",
                            f"        acc -= {label} * ((_p[i, j] / {t} - top / {t}) - lse)",
                            "    _o[i] = acc"]
        return lines + ["    s = f32(0.0)", f"    for j in range({k}):", "        s += _p[i, j]",
                        "    acc = f32(0.0)", f"    for j in range({k}):",
                        f"        q = min(max(_p[i, j] / s, {EPS}), {ONE_M_EPS})",
                        f"        acc -= {label} * math.log(q)",
                        "    _o[i] = acc"]

    def backward(op, v, ahead):
        y, p, g = op.inputs
        rows, k = v.rows_cols(p)
        scale, shift = ("", "") if sparse else _smoothing(op, False, k)
        label = _label(op, sparse, scale, shift)
        t = f32(op.attrs.get("temperature", 1.0))
        lines = [f"_y = {v(y) if sparse else v.mat(y)}", f"_p = {v.mat(p)}", f"_g = {v(g)}",
                 f"_o = {v.mat(op.out)}", f"for i in range({rows}):"]
        if op.attrs.get("from_logits"):
            return lines + ["    top = _p[i, 0]", f"    for j in range(1, {k}):", "        top = max(top, _p[i, j])",
                            "    total = f32(0.0)", "    ysum = f32(0.0)", f"    for j in range({k}):",
                            f"        e = math.exp(_p[i, j] / {t} - top / {t})", "        _o[i, j] = e",
                            "        total += e", f"        ysum += {label}",
                            f"    for j in range({k}):",
                            f"        _o[i, j] = _g[i] * (_o[i, j] / total * ysum - {label}) / {t}"]
        return lines + ["    s = f32(0.0)", f"    for j in range({k}):", "        s += _p[i, j]",
                        "    dot = f32(0.0)", f"    for j in range({k}):",
                        "        q = _p[i, j] / s",
                        f"        d = -{label} / q if q > {EPS} and q < {ONE_M_EPS} else f32(0.0)",
                        "        _o[i, j] = d", "        dot += d * q",
                        f"    for j in range({k}):",
                        "        _o[i, j] = _g[i] * (_o[i, j] - dot) / s"]
    return forward, backward


LOWERINGS["categorical_crossentropy"], LOWERINGS["categorical_crossentropy_grad"] = _categorical(False)
LOWERINGS["sparse_categorical_crossentropy"], LOWERINGS["sparse_categorical_crossentropy_grad"] = _categorical(True)


@lowering("kl_divergence")
def _kld(op: Op, v: Names, ahead):
    lines, rows, k = _pairs(op, v)
    return lines + [f"for i in range({rows}):", "    acc = f32(0.0)", f"    for j in range({k}):",
                    f"        a = min(max(_y[i, j], {EPS}), f32(1.0))",
                    f"        b = min(max(_p[i, j], {EPS}), f32(1.0))",
                    "        acc += a * math.log(a / b)", "    _o[i] = acc"]


@lowering("kl_divergence_grad")
def _kld_grad(op: Op, v: Names, ahead):
    lines, rows, k = _pairs(op, v, grad=True)
    return lines + [f"for i in range({rows}):", f"    for j in range({k}):",
                    f"        a = min(max(_y[i, j], {EPS}), f32(1.0))", "        z = _p[i, j]",
                    f"        _o[i, j] = _g[i] * (-a / z) if z > {EPS} and z < f32(1.0) else f32(0.0)"]


def _argmax_row(array: str, k: int, out: str) -> list[str]:
    return [f"    {out} = 0", f"    for j in range(1, {k}):",
            f"        if {array}[i, j] > {array}[i, {out}]:", f"            {out} = j"]


@lowering("sparse_accuracy", "categorical_accuracy")
def _accuracy(op: Op, v: Names, ahead):
    y, p = op.inputs
    rows, k = v.rows_cols(p)
    sparse = op.prim == "sparse_accuracy"
    lines = [f"_y = {v(y) if sparse else v.mat(y)}", f"_p = {v.mat(p)}", f"_o = {v(op.out)}",
             f"for i in range({rows}):"] + _argmax_row("_p", k, "best")
    if sparse:
        return lines + ["    _o[i] = f32(1.0) if best == _y[i] else f32(0.0)"]
    return lines + _argmax_row("_y", k, "truth") + ["    _o[i] = f32(1.0) if best == truth else f32(0.0)"]


@lowering("binary_accuracy")
def _binary_accuracy(op: Op, v: Names, ahead):
    lines, rows, k = _pairs(op, v)
    threshold = f32(op.attrs.get("threshold", 0.5))
    return lines + [f"for i in range({rows}):", "    acc = f32(0.0)", f"    for j in range({k}):",
                    f"        hit = (f32(1.0) if _p[i, j] > {threshold} else f32(0.0)) == _y[i, j]",
                    "        acc += f32(1.0) if hit else f32(0.0)",
                    f"    _o[i] = acc / f32({k})"]


# ---------------------------------------------------------------- optimizer updates (one pass each)

def _schedule_call(op: Op, step: str) -> str:
    """Learning rate at `step`, by the same scalar function the numpy target calls."""
    kind, *options = op.attrs.get("schedule", ("constant",))
    args = ", ".join(repr(o) for o in [float(op.attrs["lr"])] + list(options))
    return f"schedule_{kind}({step}, {args})"


@lowering("adam_update", "adamw_update")
def _adam(op: Op, v: Names, ahead):
    w, g, m, s, step = op.inputs
    a = op.attrs
    b1, b2 = float(a.get("beta_1", 0.9)), float(a.get("beta_2", 0.999))
    size = v.size(w)
    lines = [f"rate = {_schedule_call(op, v(step))}",
             f"k = {v(step)} + 1",
             f"alpha = f32(rate * math.sqrt(1.0 - {b2!r} ** k) / (1.0 - {b1!r} ** k))",
             f"_w = {v.flat(w)}", f"_g = {v.flat(g)}", f"_m = {v.flat(m)}", f"_v = {v.flat(s)}"]
    if op.prim == "adamw_update":
        lines.append(f"decay = f32(rate * {float(a.get('weight_decay', 0.004))!r})")
    lines += [f"for i in range({size}):"]
    if op.prim == "adamw_update":
        lines.append("    _w[i] = _w[i] - _w[i] * decay")
    return lines + ["    gi = _g[i]",
                    f"    mi = _m[i] + (gi - _m[i]) * {f32(1 - b1)}",
                    f"    vi = _v[i] + (gi * gi - _v[i]) * {f32(1 - b2)}",
                    "    _m[i] = mi", "    _v[i] = vi",
                    f"    _w[i] = _w[i] - alpha * mi / (math.sqrt(vi) + {f32(a.get('epsilon', 1e-7))})"]


@lowering("sgd_update")
def _sgd(op: Op, v: Names, ahead):
    w, g, vel, step = op.inputs
    momentum = float(op.attrs.get("momentum", 0.0))
    lines = [f"lr = f32({_schedule_call(op, v(step))})", f"_w = {v.flat(w)}", f"_g = {v.flat(g)}",
             f"_u = {v.flat(vel)}", f"for i in range({v.size(w)}):"]
    if not momentum:
        return lines + ["    _w[i] = _w[i] - lr * _g[i]"]
    lines += [f"    u = _u[i] * {f32(momentum)} - lr * _g[i]", "    _u[i] = u"]
    if op.attrs.get("nesterov"):
        return lines + [f"    _w[i] = _w[i] + ({f32(momentum)} * u - lr * _g[i])"]
    return lines + ["    _w[i] = _w[i] + u"]


@lowering("rmsprop_update")
def _rmsprop(op: Op, v: Names, ahead):
    w, g, vel, mom, step = op.inputs
    a = op.attrs
    rho, momentum = float(a.get("rho", 0.9)), float(a.get("momentum", 0.0))
    lines = [f"lr = f32({_schedule_call(op, v(step))})", f"_w = {v.flat(w)}", f"_g = {v.flat(g)}",
             f"_u = {v.flat(vel)}", f"_q = {v.flat(mom)}", f"for i in range({v.size(w)}):",
             "    gi = _g[i]",
             f"    u = _u[i] * {f32(rho)} + {f32(1 - rho)} * gi * gi", "    _u[i] = u",
             f"    inc = lr * gi / math.sqrt(u + {f32(a.get('epsilon', 1e-7))})"]
    if momentum:
        return lines + [f"    q = _q[i] * {f32(momentum)} + inc", "    _q[i] = q", "    _w[i] = _w[i] - q"]
    return lines + ["    _w[i] = _w[i] - inc"]
