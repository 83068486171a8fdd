"""The cpu target's kernels for images (NHWC): convolution, pooling, normalization.

A convolution works a chunk of images at a time: their patches are copied into
a workspace small enough to stay in the cache (im2col), and the product with
the kernel, seen as a [kh * kw * in, out] matrix, is one BLAS call into the
chunk's rows of the output. The kernel gradient accumulates the chunks'
patches^T @ g; the input gradient multiplies g by the kernel's transpose into
the workspace and adds each patch back where it came from (col2im). Pooling
and normalization are direct loops; max pooling's gradient finds each
window's first largest element again, as the reference does.

Every image kernel takes the geometry as whole numbers: the input's height,
width and channels, the window's height and width, the strides, the top and
left padding, and the output's height and width (`GEOMETRY`). The batch size
is the flat view's length over one sample's.
"""
from __future__ import annotations

import textwrap

from modelc.compiler import elementwise
from modelc.compiler.codegen.cpu_kernels import helper, kernel

GEOMETRY = "i:h i:w i:c i:kh i:kw i:sh i:sw i:pt i:pl i:oh i:ow"


def _register(name: str, params: str, body: str) -> None:
    kernel(name, params, *textwrap.dedent(body).strip("\n").splitlines())


# ---------------------------------------------------------------- convolution
# `ws` is the [rows, kh * kw * c] workspace: a whole number of images' patches.

_IM2COL = """
span = kw * c
for r in range(rows):
    img = first + r // (oh * ow)
    oy = (r // ow) % oh
    ox = r % ow
    x0 = ox * sw - pl
    inside = x0 >= 0 and x0 + kw <= w
    for i in range(kh):
        iy = oy * sh - pt + i
        col = i * span
        if iy < 0 or iy >= h:
            for t in range(span):
                ws[r, col + t] = 0
        elif inside:      # the window's row is one contiguous run of kw * c values
            at = ((img * h + iy) * w + x0) * c
            for t in range(span):
                ws[r, col + t] = x[at + t]
        else:
            for j in range(kw):
                ix = x0 + j
                if ix < 0 or ix >= w:
                    for ch in range(c):
                        ws[r, col + j * c + ch] = 0
                else:
                    at = ((img * h + iy) * w + ix) * c
                    for ch in range(c):
                        ws[r, col + j * c + ch] = x[at + ch]
"""

helper("im2col", "x, ws, first, rows, h, w, c, kh, kw, sh, sw, pt, pl, oh, ow",
       *textwrap.dedent(_IM2COL).strip("\n").splitlines())
_PATCHES = "    im2col(x, ws, first, rows, h, w, c, kh, kw, sh, sw, pt, pl, oh, ow)"

_CHUNKS = """
n = x.shape[0] // (h * w * c)
per = ws.shape[0] // (oh * ow)
for first in range(0, n, per):
    count = min(per, n - first)
    rows = count * oh * ow
"""


_register("k_conv2d", f"v:x m:k v:out m:ws {GEOMETRY}", f"""
f = k.shape[1]
y = out.reshape((out.shape[0] // f, f))
{_CHUNKS.strip()}
{_PATCHES}
    np.dot(ws[:rows], k, y[first * oh * ow:first * oh * ow + rows])
""")


def _conv_bias_act(name: str, act: elementwise.Activation) -> None:
    """The convolution with bias and activation applied to each chunk's rows while they are
    in the cache (cpu_kernels' k_bias_act): z = conv + b (kept: the activation's gradient
    reads it) and y = act(z)."""
    options = "".join(f" f:{p}" for p in act.params)
    _register(f"k_conv2d_bias_act_{name}", f"v:x m:k v:b v:out v:act m:ws {GEOMETRY}{options}", f"""
f = k.shape[1]
y = out.reshape((out.shape[0] // f, f))
ya = act.reshape((act.shape[0] // f, f))
{_CHUNKS.strip()}
{_PATCHES}
    at = first * oh * ow
    np.dot(ws[:rows], k, y[at:at + rows])
    k_bias_act_{name}(y[at:at + rows], b, y[at:at + rows], ya[at:at + rows]{"".join(", " + p for p in act.params)})
""")


for _name, _act in elementwise.ACTIVATIONS.items():
    _conv_bias_act(_name, _act)


_register("k_conv2d_kernel_grad", f"v:x v:g m:dk m:ws m:part {GEOMETRY}", f"""
f = dk.shape[1]
gm = g.reshape((g.shape[0] // f, f))
dk[:, :] = 0
{_CHUNKS.strip()}
{_PATCHES}
    np.dot(ws[:rows].T, gm[first * oh * ow:first * oh * ow + rows], part)
    for a in range(dk.shape[0]):
        for b in range(f):
            dk[a, b] += part[a, b]
""")

# x is the input gradient here (written; its size counts the images, as the input's
# does), g the output gradient: the chunk's rows of
# g @ k^T land in the workspace, and each patch is added back where im2col took it.
_register("k_conv2d_input_grad", f"v:g m:k v:x m:ws {GEOMETRY}", f"""
f = k.shape[1]
gm = g.reshape((g.shape[0] // f, f))
x[:] = 0
{_CHUNKS.strip()}
    np.dot(gm[first * oh * ow:first * oh * ow + rows], k.T, ws[:rows])
    for r in range(rows):
        img = first + r // (oh * ow)
        oy = (r // ow) % oh
        ox = r % ow
        for i in range(kh):
            iy = oy * sh - pt + i
            if iy < 0 or iy >= h:
                continue
            for j in range(kw):
                ix = ox * sw - pl + j
                if ix < 0 or ix >= w:
                    continue
                col = (i * kw + j) * c
                at = ((img * h + iy) * w + ix) * c
                for ch in range(c):
                    x[at + ch] += ws[r, col + ch]
""")

# ---------------------------------------------------------------- pooling

_WINDOWS = """
n = x.shape[0] // (h * w * c)
for img in range(n):
    for oy in range(oh):
        y0 = oy * sh - pt
        i0 = max(y0, 0)
        i1 = min(y0 + kh, h)
        for ox in range(ow):
            x0 = ox * sw - pl
            j0 = max(x0, 0)
            j1 = min(x0 + kw, w)
            o = ((img * oh + oy) * ow + ox) * c
"""

# The channels are the innermost loop everywhere: contiguous in NHWC.

_register("k_max_pool", f"v:x v:y {GEOMETRY}", _WINDOWS + """
            for ch in range(c):
                y[o + ch] = -math.inf
            for iy in range(i0, i1):
                for ix in range(j0, j1):
                    at = ((img * h + iy) * w + ix) * c
                    for ch in range(c):
                        y[o + ch] = max(y[o + ch], x[at + ch])
""")

# Each window's largest element per channel (`top`), then the window again, handing
# the gradient still `left` to the first element equal to it: arithmetic masks, no
# branches, so both passes run over the channels as vectors.
_register("k_max_pool_grad", f"v:g v:x v:dx {GEOMETRY}", """
dx[:] = 0
top = np.empty(c, np.float32)
left = np.empty(c, np.float32)
""" + _WINDOWS + """
            for ch in range(c):
                top[ch] = -math.inf
                left[ch] = g[o + ch]
            for iy in range(i0, i1):
                for ix in range(j0, j1):
                    at = ((img * h + iy) * w + ix) * c
                    for ch in range(c):
                        top[ch] = max(top[ch], x[at + ch])
            for iy in range(i0, i1):
                for ix in range(j0, j1):
                    at = ((img * h + iy) * w + ix) * c
                    for ch in range(c):
                        hit = f32(x[at + ch] == top[ch])
                        dx[at + ch] += left[ch] * hit
                        left[ch] -= left[ch] * hit
""")

_register("k_avg_pool", f"v:x v:y {GEOMETRY}", _WINDOWS + """
            for ch in range(c):
                y[o + ch] = 0
            for iy in range(i0, i1):
                for ix in range(j0, j1):
                    at = ((img * h + iy) * w + ix) * c
                    for ch in range(c):
                        y[o + ch] += x[at + ch]
            count = f32((i1 - i0) * (j1 - j0))
            for ch in range(c):
                y[o + ch] = y[o + ch] / count
""")

_register("k_avg_pool_grad", f"v:g v:dx {GEOMETRY}", """
x = dx
dx[:] = 0
""" + _WINDOWS + """
            count = f32((i1 - i0) * (j1 - j0))
            for iy in range(i0, i1):
                for ix in range(j0, j1):
                    at = ((img * h + iy) * w + ix) * c
                    for ch in range(c):
                        dx[at + ch] += g[o + ch] / count
""")

# ---------------------------------------------------------------- normalization
# Statistics are accumulated in float64 (per-channel sums in a small array) and rounded once.

_register("k_batch_normalize", "m:x m:xhat v:mean v:var f:eps", """
rows, cols = x.shape
s = np.zeros(cols)
for i in range(rows):
    for j in range(cols):
        s[j] += x[i, j]
for j in range(cols):
    mean[j] = f32(s[j] / rows)
    s[j] = 0.0
for i in range(rows):
    for j in range(cols):
        d = x[i, j] - mean[j]
        s[j] += d * d
for j in range(cols):
    var[j] = f32(s[j] / rows)
for i in range(rows):
    for j in range(cols):
        xhat[i, j] = (x[i, j] - mean[j]) / math.sqrt(var[j] + f32(eps))
""")

_register("k_batch_normalize_grad", "m:g m:xhat v:var m:dx f:eps", """
rows, cols = g.shape
sg = np.zeros(cols)
sgx = np.zeros(cols)
for i in range(rows):
    for j in range(cols):
        sg[j] += g[i, j]
        sgx[j] += g[i, j] * xhat[i, j]
for i in range(rows):
    for j in range(cols):
        inv = f32(1.0) / math.sqrt(var[j] + f32(eps))
        dx[i, j] = inv * (g[i, j] - f32(sg[j] / rows) - xhat[i, j] * f32(sgx[j] / rows))
""")

_register("k_normalize", "m:x v:mean v:var m:y f:eps", """
rows, cols = x.shape
for i in range(rows):
    for j in range(cols):
        y[i, j] = (x[i, j] - mean[j]) / math.sqrt(var[j] + f32(eps))
""")

_register("k_layer_normalize", "m:x m:xhat v:var f:eps", """
rows, cols = x.shape
for i in range(rows):
    s = 0.0
    for j in range(cols):
        s += x[i, j]
    mu = f32(s / cols)
    q = 0.0
    for j in range(cols):
        d = x[i, j] - mu
        q += d * d
    var[i] = f32(q / cols)
    inv = f32(1.0) / math.sqrt(var[i] + f32(eps))
    for j in range(cols):
        xhat[i, j] = (x[i, j] - mu) * inv
""")

_register("k_layer_normalize_grad", "m:g m:xhat v:var m:dx f:eps", """
rows, cols = g.shape
for i in range(rows):
    sg = 0.0
    sgx = 0.0
    for j in range(cols):
        sg += g[i, j]
        sgx += g[i, j] * xhat[i, j]
    mg = f32(sg / cols)
    mgx = f32(sgx / cols)
    inv = f32(1.0) / math.sqrt(var[i] + f32(eps))
    for j in range(cols):
        dx[i, j] = inv * (g[i, j] - mg - xhat[i, j] * mgx)
""")

_register("k_scale_last", "m:x v:s m:y", """
rows, cols = x.shape
for i in range(rows):
    for j in range(cols):
        y[i, j] = x[i, j] * s[j]
""")

_register("k_moving_average", "v:moving v:stat f:momentum f:rest", """
m = f32(momentum)
r = f32(rest)
for j in range(moving.shape[0]):
    moving[j] = moving[j] * m + stat[j] * r
""")
