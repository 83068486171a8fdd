"""Small graphs and specs that exercise every lowering of the cuda target.

Shared by tests/cuda_sim_check.py (which runs them under Numba's CUDA simulator
against the numpy target) and tests/test_cuda_ptx.py (which compiles every
kernel they generate to PTX, because the simulator does no type checking:
a kernel it runs happily may still not compile for a GPU). Importing this
module never imports numba.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from modelc.compiler import elementwise
from modelc.compiler.build import build_program
from modelc.compiler.catalog import LOSSES, METRICS, OPTIMIZERS
from modelc.compiler.emitter import Emitter
from modelc.compiler.image_primitives import out_size, same_pads
from modelc.compiler.ir import BATCH, F32, I64, Graph, Value
from modelc.compiler.primitives import PRIMITIVES
from modelc.grammar.parser import parse
from tests.formula_cases import loss_cases

BATCH_SIZE = 8


class G:
    """A hand-built graph around one primitive: input x (and target t), a step."""

    def __init__(self, x_shape, t_shape=None, t_dtype=F32):
        self.x = Value("x", F32, (BATCH,) + tuple(x_shape), "input")
        self.graph = Graph("check", inputs=[self.x])
        self.t = None
        if t_shape is not None:
            self.t = Value("t", t_dtype, (BATCH,) + tuple(t_shape), "target")
            self.graph.inputs.append(self.t)
        self.step = Value("step", I64, (), "scalar")
        self.graph.inputs.append(self.step)
        self.emit = Emitter(self.graph, {"x", "t", "step"})
        self.init: dict[str, np.ndarray] = {}
        self.init_state: dict[str, np.ndarray] = {}

    def __call__(self, prim, *inputs, **attrs):
        return self.emit(prim, *inputs, **attrs)

    def op(self, prim, *inputs, **attrs):
        return self.emit.emit_op(prim, inputs, attrs)

    def param(self, name, shape, rng, scale=0.5):
        v = Value(name, F32, tuple(shape), "param")
        self.graph.params.append(v)
        self.init[name] = (rng.standard_normal(shape) * scale).astype(np.float32)
        return v

    def stat(self, name, shape, rng, positive=False):
        """A moving statistic: a parameter that is updated (moving_average), not trained."""
        v = Value(name, F32, tuple(shape), "stat")
        self.graph.params.append(v)
        a = rng.standard_normal(shape)
        self.init[name] = (np.abs(a) + 0.5 if positive else a).astype(np.float32)
        return v

    def state(self, name, shape, rng):
        v = Value(name, F32, tuple(shape), "state")
        self.graph.state.append(v)
        self.init_state[name] = (np.abs(rng.standard_normal(shape)) * 0.1).astype(np.float32)
        return v

    def slice(self, v, start, stop, axis=1):
        return self("slice", v, axis=axis, start=start, stop=stop)

    def out(self, **values):
        self.graph.outputs.update(values)


@dataclass
class Case:
    g: G
    x: np.ndarray
    t: np.ndarray | None = None
    step: int = 3
    # structural expectation on the plan: returns a complaint or None
    expect: Callable | None = field(default=None)


def rng_for(name: str):
    return np.random.default_rng(sum(map(ord, name)))   # stable across runs (hash() is salted)


def randn(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


CASES: list[tuple[str, Callable[[], Case]]] = []


def case(name):
    def register(fn):
        CASES.append((name, fn))
        return fn
    return register


# ---------------------------------------------------------------- matmul

@case("matmul: x @ W, rows gathered through the index")
def _():
    rng = rng_for("mm1")
    g = G((5,))
    w = g.param("w", (5, 7), rng)
    g.out(y=g("matmul", g.x, w))
    return Case(g, randn(rng, BATCH_SIZE, 5))


@case("matmul: x^T @ s (ta, the gathered operand transposed), batch 7")
def _():
    rng = rng_for("mm2")
    g = G((6,))
    s = g.slice(g.x, 1, 4)
    g.out(y=g("matmul", g.x, s, ta=True))
    return Case(g, randn(rng, 7, 6))


@case("matmul: x @ W^T (tb)")
def _():
    rng = rng_for("mm3")
    g = G((6,))
    w = g.param("w", (7, 6), rng)
    g.out(y=g("matmul", g.x, w, tb=True))
    return Case(g, randn(rng, BATCH_SIZE, 6))


@case("matmul: A^T @ B^T (ta and tb), unbatched")
def _():
    rng = rng_for("mm4")
    g = G((3,))
    a = g.param("a", (5, 6), rng)
    b = g.param("b", (7, 5), rng)
    g.out(y=g("matmul", a, b, ta=True, tb=True))
    return Case(g, randn(rng, BATCH_SIZE, 3))


def _fused_colsum(plan):
    if not any(k.kind == "matmul" and any(o.prim == "sum_to_last" for o in k.ops) for k in plan.kernels):
        return "sum_to_last was not fused into the weight-gradient matmul"
    return None


@case("matmul: a^T @ g with the bias gradient sum_to_last(g) fused, batch 7")
def _():
    rng = rng_for("mm5")
    g = G((9,))
    a = g.slice(g.x, 0, 3)
    d = g.slice(g.x, 3, 9)
    g.out(kernel=g("matmul", a, d, ta=True), bias=g("sum_to_last", d))
    return Case(g, randn(rng, 7, 9), expect=_fused_colsum)


def _one_kernel(plan):
    return None if len(plan.kernels) == 1 else f"expected one fused kernel, got:\n{plan.describe()}"


@case("matmul epilogue: bias_add, tanh, dropout in one kernel")
def _():
    rng = rng_for("mm6")
    g = G((5,))
    w = g.param("w", (5, 6), rng)
    b = g.param("b", (6,), rng)
    z = g("bias_add", g("matmul", g.x, w), b)
    h = g("act", z, fn="tanh")
    drop = g.op("dropout", h, g.step, rate=0.4, seed=77)
    g.out(z=z, y=drop.outputs[0], mask=drop.outputs[1])
    return Case(g, randn(rng, BATCH_SIZE, 5), step=11, expect=_one_kernel)


# ---------------------------------------------------------------- elementwise

@case("bias_add on its own")
def _():
    rng = rng_for("bias")
    g = G((2, 3))
    b = g.param("b", (3,), rng)
    g.out(y=g("bias_add", g.x, b))
    return Case(g, randn(rng, BATCH_SIZE, 2, 3))


def _activation_case(name):
    fn = elementwise.ACTIVATIONS[name]
    params = {k: (0.1 if k == "negative_slope" else 0.7) for k in fn.params}

    def build():
        rng = rng_for("act" + name)
        g = G((10,))
        z = g.slice(g.x, 0, 5)
        d = g.slice(g.x, 5, 10)
        y = g("act", z, fn=name, **params)
        g.out(y=y, dz=g("act_grad", d, z, y, fn=name, **params))
        x = randn(rng, BATCH_SIZE, 10, scale=3.0)
        x[0, :5] = [-30.0, -1e-3, 0.0, 1e-3, 30.0]     # both sides, zero, and saturation
        return Case(g, x)
    return build


for _name in elementwise.ACTIVATIONS:
    case(f"act and act_grad: {_name}")(_activation_case(_name))


@case("add of three, mul")
def _():
    rng = rng_for("add")
    g = G((9,))
    a, b, c = g.slice(g.x, 0, 3), g.slice(g.x, 3, 6), g.slice(g.x, 6, 9)
    g.out(sum=g("add", a, b, c), prod=g("mul", a, c))
    return Case(g, randn(rng, BATCH_SIZE, 9))


@case("concat and slice on axes 1 and 2, reshape")
def _():
    rng = rng_for("concat")
    g = G((2, 3))
    a = g.slice(g.x, 0, 2, axis=2)
    b = g.slice(g.x, 2, 3, axis=2)
    joined = g("concat", b, a, axis=2)
    row = g.slice(g.x, 1, 2, axis=1)
    flat = g("reshape", g.x, shape=(6,))
    g.out(joined=joined, row=row, wide=g("concat", flat, g("reshape", joined, shape=(6,)), axis=1))
    return Case(g, randn(rng, BATCH_SIZE, 2, 3))


@case("dropout: the same counter hash as primitives.dropout_uniform")
def _():
    rng = rng_for("dropout")
    g = G((7,))
    op = g.op("dropout", g.x, g.step, rate=0.3, seed=123456789)
    g.out(y=op.outputs[0], mask=op.outputs[1])
    return Case(g, randn(rng, BATCH_SIZE, 7), step=2 ** 33 + 5)


@case("sum_to_last on its own: 2-D and 3-D")
def _():
    rng = rng_for("colsum")
    g = G((2, 3))
    g.out(s3=g("sum_to_last", g.x), s2=g("sum_to_last", g("reshape", g.x, shape=(6,))))
    return Case(g, randn(rng, BATCH_SIZE, 2, 3))


# ---------------------------------------------------------------- rows

@case("softmax (T=0.7) and softmax_grad")
def _():
    rng = rng_for("softmax")
    g = G((10,))
    z, d = g.slice(g.x, 0, 5), g.slice(g.x, 5, 10)
    y = g("softmax", z, temperature=0.7)
    g.out(y=y, dz=g("softmax_grad", d, y, temperature=0.7))
    return Case(g, randn(rng, BATCH_SIZE, 10, scale=3.0))


@case("log_softmax (T=1.3) and log_softmax_grad")
def _():
    rng = rng_for("log_softmax")
    g = G((10,))
    z, d = g.slice(g.x, 0, 5), g.slice(g.x, 5, 10)
    y = g("log_softmax", z, temperature=1.3)
    g.out(y=y, dz=g("log_softmax_grad", d, y, temperature=1.3))
    return Case(g, randn(rng, BATCH_SIZE, 10, scale=3.0))


@case("softmax and log_softmax over the last axis of a 3-D input")
def _():
    rng = rng_for("softmax3")
    g = G((2, 3))
    y = g("log_softmax", g.x)
    g.out(p=g("softmax", g.x, temperature=2.0), y=y, dz=g("log_softmax_grad", g.x, y))
    return Case(g, randn(rng, BATCH_SIZE, 2, 3, scale=2.0))


def _loss_graph(loss, attrs, x_shape, t_shape, t_dtype, make_p):
    g = G(x_shape, t_shape, t_dtype)
    p = make_p(g)
    per = g(loss, g.t, p, **attrs)
    gs = g("mean_grad", g("constant", value=1.0), per)
    g.out(loss=g("mean", per), per_sample=per, dp=g(loss + "_grad", g.t, p, gs, **attrs))
    return g


def _loss_case(label, loss, attrs, kind):
    def build():
        rng = rng_for(label)
        if kind == "regression":
            g = _loss_graph(loss, attrs, (2, 3), (2, 3), F32, lambda g: g.x)
            return Case(g, randn(rng, BATCH_SIZE, 2, 3), randn(rng, BATCH_SIZE, 2, 3))
        if kind == "margin":
            t = rng.choice([-1.0, 0.0, 1.0], (BATCH_SIZE, 3)).astype(np.float32)
            return Case(_loss_graph(loss, attrs, (3,), (3,), F32, lambda g: g.x), randn(rng, BATCH_SIZE, 3), t)
        if kind == "count":
            t = rng.integers(0, 4, (BATCH_SIZE, 3)).astype(np.float32)
            make = lambda g: g("act", g.x, fn="softplus")   # noqa: E731 - positive rates
            return Case(_loss_graph(loss, attrs, (3,), (3,), F32, make), randn(rng, BATCH_SIZE, 3), t)
        if kind == "binary":
            x = randn(rng, BATCH_SIZE, 3, scale=4.0)
            x[0] = [40.0, -40.0, 0.0]                  # probabilities clipped at both ends
            t = rng.integers(0, 2, (BATCH_SIZE, 3)).astype(np.float32)
            make = (lambda g: g.x) if attrs.get("from_logits") else (lambda g: g("act", g.x, fn="sigmoid"))
            return Case(_loss_graph(loss, attrs, (3,), (3,), F32, make), x, t)
        x = randn(rng, BATCH_SIZE, 4, scale=2.0)
        make = (lambda g: g.x) if attrs.get("from_logits") else (lambda g: g("softmax", g.x))
        if kind == "sparse":
            t = rng.integers(0, 4, BATCH_SIZE).astype(np.int64)
            return Case(_loss_graph(loss, attrs, (4,), (), I64, make), x, t)
        if kind == "distribution":
            t = rng.random((BATCH_SIZE, 4)).astype(np.float32)
            t[0, 0] = 0.0                                # a clipped target
            t /= t.sum(axis=1, keepdims=True)
        else:
            t = np.eye(4, dtype=np.float32)[rng.integers(0, 4, BATCH_SIZE)]
        return Case(_loss_graph(loss, attrs, (4,), (4,), F32, make), x, t)
    return build


# every loss of the catalog: as it is, on logits (with a fused softmax's temperature), each float option set
LOSS_CASES = [(name, attrs, LOSSES[name].kind) for name, _, attrs in loss_cases()]
for _loss, _attrs, _kind in LOSS_CASES:
    _label = f"loss {_loss}" + (f" {_attrs}" if _attrs else "")
    case(_label + ", its gradient, mean and mean_grad")(_loss_case(_label, _loss, _attrs, _kind))


def _metric_case(rule: str, attrs: dict, fmt: str):
    def build():
        rng = rng_for(f"metric {rule} {fmt}")
        if fmt == "sparse":
            g = G((4,), (), I64)
            t = rng.integers(0, 4, BATCH_SIZE).astype(np.int64)
            p = g.x
        else:
            g = G((4,), (4,))
            t = (np.eye(4, dtype=np.float32)[rng.integers(0, 4, BATCH_SIZE)] if fmt == "onehot"
                 else rng.integers(0, 2, (BATCH_SIZE, 4)).astype(np.float32))
            p = g("act", g.x, fn="sigmoid") if fmt == "dense" else g.x
        per = g(rule, g.t, p, **attrs)
        g.out(mean=g("mean", per), per=per)
        return Case(g, randn(rng, BATCH_SIZE, 4), t)
    return build


# every row rule of every metric, on each target format it takes
for _d in METRICS.values():
    _attrs = {p.name: (2 if p.name == "k" else p.default) for p in _d.params}
    for _rule in ((_d.rule,) if _d.rule else ()) + (_d.ratio or ()):
        for _f in _d.targets:
            case(f"metric {_d.name}: {_rule.name} on {_f} targets")(_metric_case(_rule.name, _attrs, _f))


# ---------------------------------------------------------------- convolution, pooling, normalization

_FIRST_IMAGE_CASE = len(CASES)

def _kernel_with(*prims):
    """A plan check: some kernel runs all of `prims` (a fused epilogue, a fused reduction)."""
    def check(plan):
        if any(set(prims) <= {o.prim for o in kern.ops} for kern in plan.kernels):
            return None
        return f"no kernel runs {', '.join(prims)} together:\n{plan.describe()}"
    return check


def _both(*checks):
    return lambda plan: next((c for c in (check(plan) for check in checks) if c), None)


def _geometry(hw, window, strides, padding):
    pads = ((same_pads(hw[0], window[0], strides[0]) + same_pads(hw[1], window[1], strides[1]))
            if padding == "same" else (0, 0, 0, 0))
    out = (out_size(hw[0], window[0], strides[0], pads[0], pads[1]),
           out_size(hw[1], window[1], strides[1], pads[2], pads[3]))
    return pads, out


def _conv_case(label, hw, c, f, window, strides, padding):
    """conv2d with bias and relu fused into its epilogue, its input gradient with the
    previous layer's activation gradient fused into its epilogue, and its kernel gradient
    with the bias gradient fused, on gathered images (the target is the gradient)."""
    def build():
        rng = rng_for(label)
        pads, (oh, ow) = _geometry(hw, window, strides, padding)
        g = G((*hw, c), (oh, ow, f))
        k, b = g.param("k", (*window, c, f), rng), g.param("b", (f,), rng)
        geometry = {"strides": strides, "pads": pads}
        before = g("act", g.x, fn="elu")
        z = g("bias_add", g("conv2d", before, k, **geometry), b)
        dx = g("conv2d_input_grad", g.t, k, size=hw, **geometry)
        g.out(z=z, y=g("act", z, fn="relu"), dx=dx, dbefore=g("act_grad", dx, g.x, before, fn="elu"),
              dk=g("conv2d_kernel_grad", g.x, g.t, window=window, **geometry), db=g("sum_to_last", g.t))
        return Case(g, randn(rng, 5, *hw, c), randn(rng, 5, oh, ow, f),
                    expect=_both(_kernel_with("conv2d", "bias_add", "act"),
                                 _kernel_with("conv2d_input_grad", "act_grad"),
                                 _kernel_with("conv2d_kernel_grad", "sum_to_last")))
    return build


CONV_CASES = [("3x3 same, stride 1", (5, 5), 2, 3, (3, 3), (1, 1), "same"),
              ("2x2 (even) same, stride 2, odd image: pads (0, 1, 0, 1)", (5, 5), 3, 2, (2, 2), (2, 2), "same"),
              ("4x4 (even) same, stride 1: pads (1, 2, 1, 2)", (4, 5), 1, 3, (4, 4), (1, 1), "same"),
              ("3x2 valid, strides (2, 1)", (6, 5), 3, 5, (3, 2), (2, 1), "valid"),
              ("3x3 same, strides (2, 3)", (6, 7), 2, 3, (3, 3), (2, 3), "same")]
for _label, *_args in CONV_CASES:
    case(f"conv2d {_label}: epilogue, input and kernel gradients, batch 5")(_conv_case(_label, *_args))


def _pool_case(label, prim, hw, c, window, strides, padding):
    """A pooling and its gradient on gathered images; max pooling on small integers, so
    windows hold ties (the gradient goes to the first largest element)."""
    def build():
        rng = rng_for(label)
        pads, (oh, ow) = _geometry(hw, window, strides, padding)
        g = G((*hw, c), (oh, ow, c))
        geometry = {"window": window, "strides": strides, "pads": pads}
        grad = (g("max_pool_grad", g.t, g.x, **geometry) if prim == "max_pool"
                else g("avg_pool_grad", g.t, size=hw, **geometry))
        g.out(y=g(prim, g.x, **geometry), dx=grad)
        x = (rng.integers(-2, 3, (7, *hw, c)).astype(np.float32) if prim == "max_pool"
             else randn(rng, 7, *hw, c))
        return Case(g, x, randn(rng, 7, oh, ow, c))
    return build


POOL_CASES = [("max_pool", "2x2 stride 2 valid, ragged (5x5: the last row and column in no window)",
               (5, 5), 3, (2, 2), (2, 2), "valid"),
              ("max_pool", "3x3 stride 2 same, overlapping windows", (5, 6), 2, (3, 3), (2, 2), "same"),
              ("max_pool", "2x3 stride 1 same", (4, 4), 2, (2, 3), (1, 1), "same"),
              ("max_pool", "global (window = image)", (3, 4), 5, (3, 4), (3, 4), "valid"),
              ("max_pool", "2x1 strides (3, 2): elements between the windows", (7, 5), 2, (2, 1), (3, 2), "valid"),
              ("avg_pool", "3x3 stride 2 same (edge windows count fewer elements)", (5, 4), 3, (3, 3), (2, 2), "same"),
              ("avg_pool", "2x2 stride 1 valid, overlapping", (3, 3), 2, (2, 2), (1, 1), "valid"),
              ("avg_pool", "global (window = image)", (3, 4), 5, (3, 4), (3, 4), "valid")]
for _prim, _label, *_args in POOL_CASES:
    case(f"{_prim} {_label} and its gradient")(_pool_case(_prim + _label, _prim, *_args))


@case("batch_normalize of [3, 3, 4] images with its moving averages fused, scale_last, bias_add; its gradient")
def _():
    rng = rng_for("bn4")
    g = G((3, 3, 4), (3, 3, 4))
    gamma, beta = g.param("gamma", (4,), rng), g.param("beta", (4,), rng)
    mm, mv = g.stat("mm", (4,), rng), g.stat("mv", (4,), rng, positive=True)
    xhat, mean, var = g.op("batch_normalize", g.x, epsilon=1e-3).outputs
    g.emit.emit_op("moving_average", (mm, mean), {"momentum": 0.9}, writes=(mm,))
    g.emit.emit_op("moving_average", (mv, var), {"momentum": 0.99}, writes=(mv,))
    g.out(y=g("bias_add", g("scale_last", xhat, gamma), beta), mean=mean, var=var,
          dx=g("batch_normalize_grad", g.t, xhat, var, epsilon=1e-3))
    return Case(g, randn(rng, 7, 3, 3, 4, scale=2.0) + 1.5, randn(rng, 7, 3, 3, 4),
                expect=_kernel_with("batch_normalize", "moving_average"))


@case("batch_normalize of [5] features; moving_average of another statistic; normalize (inference)")
def _():
    rng = rng_for("bn2")
    g = G((5,), (5,))
    mm, mv, ms = g.stat("mm", (5,), rng), g.stat("mv", (5,), rng, positive=True), g.stat("ms", (5,), rng)
    xhat, mean, var = g.op("batch_normalize", g.x, epsilon=0.01).outputs
    g.emit.emit_op("moving_average", (ms, g("sum_to_last", g.x)), {"momentum": 0.75}, writes=(ms,))
    g.out(xhat=xhat, var=var, dx=g("batch_normalize_grad", g.t, xhat, var, epsilon=0.01),
          n=g("normalize", g.x, mm, mv, epsilon=0.01))
    return Case(g, randn(rng, 7, 5) - 0.5, randn(rng, 7, 5), expect=_kernel_with("moving_average"))


def _layer_norm_case(shape):
    def build():
        rng = rng_for(f"ln{shape}")
        g = G(shape, shape)
        gamma = g.param("gamma", (shape[-1],), rng)
        xhat, var = g.op("layer_normalize", g.x, epsilon=1e-3).outputs
        g.out(xhat=xhat, var=var, y=g("scale_last", xhat, gamma),
              dx=g("layer_normalize_grad", g.t, xhat, var, epsilon=1e-3))
        return Case(g, randn(rng, 7, *shape, scale=2.0) + 0.5, randn(rng, 7, *shape))
    return build


for _shape in ((2, 3, 5), (7,)):
    case(f"layer_normalize over the last axis of {list(_shape)} and its gradient in one row kernel")(
        _layer_norm_case(_shape))

# the cases above, which tests/test_cuda_ptx.py also compiles for sm_90 and links
IMAGE_CASES = [name for name, _ in CASES[_FIRST_IMAGE_CASE:]]


# ---------------------------------------------------------------- optimizers

def _optimizer_variants():
    """Every optimizer with its defaults, each bool and momentum option set, and each kind of
    gradient clipping, from the catalog."""
    out = []
    for d in OPTIMIZERS.values():
        base = {p.name: p.default for p in d.params}
        base.update(lr=0.01, schedule=("constant",))
        out.append((d.primitive, base))
        if "momentum" in base:
            out.append((d.primitive, dict(base, momentum=0.5, schedule=("inverse_time_decay", 0.5, 3, False))))
        for p in d.params:
            if p.kind == "bool":
                out.append((d.primitive, dict(base, momentum=0.5, **{p.name: True})))
    adam = {p.name: p.default for p in OPTIMIZERS["adam"].params}
    adam.update(lr=0.01, schedule=("exponential_decay", 0.5, 3, True))
    out += [("adam_update", dict(adam, clipvalue=0.05)), ("adam_update", dict(adam, clipnorm=0.3)),
            ("adam_update", dict(adam, global_clipnorm=0.3))]
    return out


OPTIMIZER_CASES = _optimizer_variants()


def _optimizer_case(prim, attrs):
    def build():
        rng = rng_for(prim + str(attrs))
        g = G((7,))
        a, d = g.slice(g.x, 0, 3), g.slice(g.x, 3, 7)
        w, b = g.param("w", (3, 4), rng), g.param("b", (4,), rng)
        gw, gb = g("matmul", a, d, ta=True), g("sum_to_last", d)
        norms = {}
        if attrs.get("clipnorm"):
            norms = {"w": g("sum_squares", gw), "b": g("sum_squares", gb)}
        elif attrs.get("global_clipnorm"):
            total = g("add", g("sum_squares", gw), g("sum_squares", gb))
            norms = {"w": total, "b": total}
        for p, grad in ((w, gw), (b, gb)):
            state = [g.state(f"{p.name}.s{i}", p.shape, rng) for i in range(len(PRIMITIVES[prim].formula({}).state))]
            extra = (norms[p.name],) if norms else ()
            g.emit.emit_op(prim, (p, grad, *state, g.step, *extra), dict(attrs), writes=(p, *state))
        g.out(gw=gw)
        return Case(g, randn(rng, BATCH_SIZE, 7), step=7)
    return build


for _prim, _attrs in OPTIMIZER_CASES:
    case(f"optimizer {_prim} {_attrs}")(_optimizer_case(_prim, _attrs))


# ---------------------------------------------------------------- whole specs

SPECS = {
    # Every name here is also one the compiler or its generated code uses itself: the update
    # counter, the learning rate, the interpreter's arguments, the cuda kernels' parameters
    # and locals, a gradient's prefix (layer d, value kernel: d.kernel twice).
    "clash": """
model clash
input  step: f32[4]
target lr: f32[3] onehot
network {
    step -> dense(5, relu) => order
    order -> dense(5, tanh) => batch
    (order, batch) -> add => sums
    sums -> dense(4, relu) => A
    A -> dropout(0.25) => L
    (L, A) -> concat => idx
    idx -> dense(4, relu) => off
    off -> dense(4) => nb
    nb -> dense(4, relu) => u_w
    u_w -> dense(4, relu) => d
    d -> dense(4, relu) => kernel
    kernel -> dense(3, softmax) => alpha
}
loss      categorical_crossentropy(lr, alpha)
optimizer adam(lr=0.01)
metrics   accuracy
""",
    "blobs": """
model blobs
input  point: f32[2]
target label: f32[3] onehot
network {
    point -> dense(50, relu) -> dense(3, softmax) => probs
}
loss      categorical_crossentropy(label, probs)
optimizer adam(lr=0.01)
metrics   accuracy
""",
    "features": """
model features
input  x: f32[6]
target t: f32[3]
network {
    x -> dense(5, tanh) => h
    h -> dropout(0.25) -> dense(5, leaky_relu(negative_slope=0.1)) => a
    (h, a) -> add => s
    (s, h) -> concat -> dense(3, elu) -> dense(3) => out
}
loss      huber(t, out, delta=0.5)
optimizer sgd(lr=0.05, momentum=0.9, nesterov=true)
metrics   mae, mse
train {
    schedule exponential_decay(rate=0.5, steps=2, staircase=true)
}
""",
    "binary": """
model binary
input  x: f32[2, 3]
target t: f32[2]
network {
    x -> flatten -> dense(4, gelu) -> dense(4, softplus) -> dense(4, silu) -> dense(2, sigmoid) => p
}
loss      binary_crossentropy(t, p, label_smoothing=0.1)
optimizer rmsprop(lr=0.01, momentum=0.5)
metrics   accuracy
""",
    "cnn": """
model cnn
input  image: f32[8, 8, 1]
target label: int[] classes 3
network {
    image -> conv2d(4, 3, relu, padding=same)
          -> batch_normalization
          -> max_pooling2d(2)
          -> conv2d(6, [2, 2], strides=2, activation=relu)
          -> layer_normalization
          -> average_pooling2d(2, padding=same)
          -> global_average_pooling2d
          -> dense(3, softmax) => probs
}
loss      sparse_categorical_crossentropy(label, probs)
optimizer adam(lr=0.01)
metrics   accuracy
""",
    "sparse": """
model sparse
input  x: f32[5]
target k: int[] classes 4
network {
    x -> dense(6, selu) -> dense(4, softmax(temperature=0.5)) => p
}
loss      sparse_categorical_crossentropy(k, p)
optimizer adamw(lr=0.01, weight_decay=0.1)
metrics   accuracy
train {
    schedule cosine_decay(steps=4, alpha=0.1)
}
""",
}


def program(name: str):
    return build_program(parse(SPECS[name], f"<{name}>"))


def deep(layers: int, clip: bool = True):
    """`layers` dense layers of 3 units, Adam (with a global clip norm): a net with many
    parameters and tiny shapes, to split the optimizer kernel (tests/test_cuda_limits.py)."""
    return build_program(parse(f"""
model deep
input  x: f32[3]
target y: int[] classes 2
network {{ x -> {' -> '.join(['dense(3, tanh)'] * layers)} -> dense(2, softmax) => p }}
loss      sparse_categorical_crossentropy(y, p)
optimizer adam(lr=0.01{', global_clipnorm=0.5' if clip else ''})
""", "<deep>"))


def spec_data(prog, n, rng):
    """Inputs and targets of the right kind for a program's loss."""
    x = randn(rng, n, *prog.input.shape[1:], scale=2.0)
    target = prog.target
    if target.format == "sparse":
        y = rng.integers(0, target.classes, n).astype(np.int64)
    elif target.format == "onehot":
        y = np.eye(target.classes, dtype=np.float32)[rng.integers(0, target.classes, n)]
    elif LOSSES[prog.loss_name].kind in ("binary", "margin"):
        y = rng.integers(0, 2, (n,) + tuple(target.value.shape[1:])).astype(np.float32)
    elif prog.loss_name == "kl_divergence":
        y = rng.random((n,) + tuple(target.value.shape[1:])).astype(np.float32) + 0.05
        y /= y.sum(axis=-1, keepdims=True)
    else:
        y = randn(rng, n, *target.value.shape[1:])
    return x, y
