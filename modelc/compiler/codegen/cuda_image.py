"""Convolution and pooling kernels of the `cuda` target (pure Python: writes
kernel source, never imports numba). The planner calls `emit_conv` and
`emit_pool` with itself as `p` (`cuda_planner._Planner`: `new_kernel`, `add`,
`grow_chain`, `emit_chain`, `base`, `cfg`).

Images are NHWC and kernels [kh, kw, C, F], so a kernel is a [K, F] matrix
(K = kh*kw*C, row (i*kw + j)*C + c) and the rows of an image batch, one per
pixel, are an [M, C] matrix. Every convolution is an implicit GEMM on the
matmul's tiles (T x T threads, two T x (T+1) shared-memory tiles): the tile
loader computes the im2col address of each element on the fly (zero outside
the image), so no patch matrix ever exists in memory.

  * forward, C[M = B*OH*OW, F] = patches @ kernel: thread (ty, tx) loads patch
    element (m0+ty, k0+tx), consecutive along the channels of one pixel; the
    epilogue runs the elementwise chain that follows (bias, activation) before
    the one store, as a matmul's does;
  * input gradient, C[M = B*H*W, C] = G' @ kernel^T with K = kh*kw*F: the loader
    returns g[b, (h+pt-i)/sh, (w+pl-j)/sw, f] where that is a whole in-range
    output position, else 0;
  * kernel gradient, C[K, F] = patches^T @ g summed over M = B*OH*OW: split over
    chunks of `conv_chunk` rows (grid z), each block stores its chunk's partial
    tile, and a second kernel adds the partials in chunk order (deterministic,
    no atomics). The bias gradient `sum_to_last(g)` is fused as in the matmul:
    the first tile row of blocks also sums the g tiles it streams.

Pooling: one thread per output element (consecutive threads, consecutive
channels) loops over its window; the gradients are gathers, one thread per
input element over the windows that cover it, in the reference's order (so
the sums are the reference's, bit for bit, and no atomics are needed). Max
pooling's gradient recomputes each covering window's first largest element.
"""
from __future__ import annotations

from modelc.compiler.codegen.cuda_emit import At
from modelc.compiler.codegen.cuda_plan import CudaCodegenError, Extent, indent, lit
from modelc.compiler.ir import BATCH, F32, Op, Value


def _tiles(T: int) -> list[str]:
    return [f"As = cuda.shared.array(({T}, {T + 1}), float32)",
            f"Bs = cuda.shared.array(({T}, {T + 1}), float32)"]


def _product(T: int, colsum: bool) -> list[str]:
    """The tile product (and the g tile's column sums) between the two barriers."""
    lines = ["cuda.syncthreads()", f"for q in range({T}):", "    acc += As[ty, q] * Bs[q, tx]"]
    if colsum:
        lines.append("cs += Bs[ty, tx]")
    return lines + ["cuda.syncthreads()"]


def _inside(h: str, w: str, H: int, W: int, pads) -> str:
    """The bounds test of an image position, empty when there is no padding (every
    window of an unpadded image lies inside it)."""
    if not any(pads):
        return ""
    return f" and {h} >= 0 and {h} < {H} and {w} >= 0 and {w} < {W}"


def _pixel(prefix: str, m: str, H: int, W: int) -> list[str]:
    """Sample, row and column of flat pixel m of [B, H, W] images."""
    b, r, h = f"{prefix}b", f"{prefix}r", f"{prefix}h"
    return [f"{b} = {m} // {H * W}", f"{r} = {m} - {b} * {H * W}", f"{h} = {r} // {W}",
            f"{prefix}w = {r} - {h} * {W}"]


def _epilogue(p, k, op: Op, chain, M: str, N: int) -> list[str]:
    """Store element (m, n) of the [M, N] product `acc` (the batched output, N along
    its last axis) and run the elementwise chain on it, in registers."""
    out = op.out
    rows = out.sample_size() // N
    at = At("mb", f"(m - mb * {rows}) * {N} + n", f"m * {N} + n", last=(N, "n"))
    group_ids = {id(o) for o in [op] + chain}
    lines = [f"mb = m // {rows}"]
    if p.stored_outside(out, group_ids):
        lines.append(k.store(out, at.r, at.c, "acc"))
    lines += p.emit_chain(k, chain, {out.id: "acc"}, at, group_ids)
    return ["m = m0 + ty", "n = n0 + tx", f"if m < {M} and n < {N}:"] + indent(lines)


def emit_conv(p, i: int, op: Op, colsum: Op | None):
    """A convolution or one of its gradients; grids put the tiles of the B*H*W rows on x
    (2^31 - 1 blocks), as a large image batch needs."""
    if not op.inputs[0].batched:
        raise CudaCodegenError(f"{op.prim} of an unbatched value")
    if op.prim == "conv2d":
        _forward(p, i, op)
    elif op.prim == "conv2d_input_grad":
        _input_grad(p, i, op)
    else:
        _kernel_grad(p, op, colsum)


def _implicit_gemm(p, i: int, op: Op, H: int, W: int):
    """The start of a convolution GEMM whose rows are the [B, H, W] pixels of its output:
    the elementwise chain it absorbs, its kernel builder, the tile size, the row count M
    and the body so far (tiles, this thread's output tile and its row's pixel a*)."""
    chain = p.grow_chain(i, op, {op.out.id}, op.out.sample_size())
    k = p.new_kernel("conv", [op] + chain, op.out.name)
    T = p.cfg.tile
    M = f"{k.scalar('nb')} * {H * W}"
    body = _tiles(T) + [f"m0 = bx * {T}", f"n0 = by * {T}", "acc = f32(0.0)",
                        "am = m0 + ty", f"aok = am < {M}"] + _pixel("a", "am", H, W)
    return chain, k, T, M, body


def _finish(p, k, op: Op, chain, body, M: str, rows: int, K: int, N: int, what: str):
    """The epilogue, the launch (row tiles on grid x) and the description of a convolution GEMM."""
    T = p.cfg.tile
    body = body + _epilogue(p, k, op, chain, M, N)
    desc = f"{what}: implicit GEMM [B*{rows}, {K}] @ [{K}, {N}], {T}x{T} shared-memory tiles"
    if chain:
        desc += "; epilogue: " + ", ".join(o.prim + (f"({o.attrs['fn']})" if "fn" in o.attrs else "") for o in chain)
    p.add(k.finish(body, (Extent(rows, 0, T), Extent(0, N, T)), (T, T), desc))


def _forward(p, i: int, op: Op):
    x, w = op.inputs
    out = op.out
    _, H, W, C = x.shape
    _, OH, OW, F = out.shape
    kh, kw = w.shape[:2]
    (sh, sw), pads = op.attrs["strides"], op.attrs["pads"]
    K = kh * kw * C
    chain, k, T, M, body = _implicit_gemm(p, i, op, OH, OW)
    xa, wa = k.array(x), k.array(w)
    body += [f"ah0 = ah * {sh} - {pads[0]}", f"aw0 = aw * {sw} - {pads[2]}",
             f"arow = {k.row_base(x, 'ab')} if aok else 0"]
    loop = ["ak = k0 + tx", f"ai = ak // {kw * C}", f"aq = ak - ai * {kw * C}", f"aj = aq // {C}",
            "hh = ah0 + ai", "ww = aw0 + aj",
            f"As[ty, tx] = {xa}[arow + (hh * {W} + ww) * {C} + aq - aj * {C}] "
            f"if aok and ak < {K}{_inside('hh', 'ww', H, W, pads)} else f32(0.0)",
            "bk = k0 + ty", "bn = n0 + tx",
            f"Bs[ty, tx] = {wa}[bk * {F} + bn] if bk < {K} and bn < {F} else f32(0.0)"]
    body += [f"for k0 in range(0, {K}, {T}):"] + indent(loop + _product(T, False))
    _finish(p, k, op, chain, body, M, OH * OW, K, F, f"{out.name} = conv2d {kh}x{kw} stride {sh}x{sw} pads {pads}")


def _input_grad(p, i: int, op: Op):
    g, w = op.inputs
    out = op.out
    _, H, W, C = out.shape
    _, OH, OW, F = g.shape
    kh, kw = w.shape[:2]
    (sh, sw), pads = op.attrs["strides"], op.attrs["pads"]
    K = kh * kw * F
    chain, k, T, M, body = _implicit_gemm(p, i, op, H, W)
    ga, wa = k.array(g), k.array(w)
    body += [f"aph = ah + {pads[0]}", f"apw = aw + {pads[2]}", f"grow = {k.row_base(g, 'ab')} if aok else 0"]

    def position(axis: str, num: str, s: int, n: int) -> tuple[list[str], str]:
        if s == 1:
            return [f"{axis} = {num}"], f"{axis} >= 0 and {axis} < {n}"
        return ([f"{axis}n = {num}", f"{axis} = {axis}n // {s}"],
                f"{axis}n >= 0 and {axis}n - {axis} * {s} == 0 and {axis} < {n}")

    hl, hok = position("oh", "aph - ai", sh, OH)
    wl, wok = position("ow", "apw - aj", sw, OW)
    loop = ["ak = k0 + tx", f"aij = ak // {F}", f"af = ak - aij * {F}", f"ai = aij // {kw}", f"aj = aij - ai * {kw}"]
    loop += hl + wl
    loop += [f"As[ty, tx] = {ga}[grow + (oh * {OW} + ow) * {F} + af] "
             f"if aok and ak < {K} and {hok} and {wok} else f32(0.0)",
             # kernel[i, j, c, f] as B[kk = (i*kw + j)*F + f, c]: loaded along f, stored transposed
             "bk = k0 + tx", "bn = n0 + ty", f"bij = bk // {F}",
             f"Bs[tx, ty] = {wa}[(bij * {C} + bn) * {F} + bk - bij * {F}] if bk < {K} and bn < {C} else f32(0.0)"]
    body += [f"for k0 in range(0, {K}, {T}):"] + indent(loop + _product(T, False))
    _finish(p, k, op, chain, body, M, H * W, K, C,
            f"{out.name} = conv2d input gradient {kh}x{kw} stride {sh}x{sw} pads {pads}")


def _kernel_grad(p, op: Op, colsum: Op | None):
    x, g = op.inputs
    out = op.out
    _, H, W, C = x.shape
    _, OH, OW, F = g.shape
    kh, kw = op.attrs["window"]
    (sh, sw), pads = op.attrs["strides"], op.attrs["pads"]
    K, T, CH = kh * kw * C, p.cfg.tile, p.cfg.conv_chunk
    per_sample = -(-OH * OW // CH)         # chunks per sample, at most: the partials' size
    part = Value(f"{out.name}.partial", F32, (BATCH, per_sample, K * F), "temp")
    partials = (part,)
    if colsum:
        partials += (Value(f"{colsum.out.name}.partial", F32, (BATCH, per_sample, F), "temp"),)
    pseudo = Op("partial_products", (x, g), partials)
    k = p.new_kernel("conv", [pseudo], out.name)
    M = f"{k.scalar('nb')} * {OH * OW}"
    xa, ga, pa = k.array(x), k.array(g), k.array(part, write=True)
    body = _tiles(T) + [f"kk0 = by * {T}", f"n0 = bx * {T}", "z = bz",
                        "acc = f32(0.0)"] + (["cs = f32(0.0)"] if colsum else [])
    # the patch column this thread loads is fixed: kernel row kk0 + tx
    body += ["ak = kk0 + tx", f"ai = ak // {kw * C}", f"aq = ak - ai * {kw * C}", f"aj = aq // {C}",
             f"ac = aq - aj * {C}", f"mbeg = z * {CH}", f"mend = min({M}, mbeg + {CH})"]
    loop = ["am = m0 + ty"] + _pixel("a", "am", OH, OW)
    loop += [f"hh = ah * {sh} - {pads[0]} + ai", f"ww = aw * {sw} - {pads[2]} + aj",
             f"As[tx, ty] = {xa}[{k.row_base(x, 'ab')} + (hh * {W} + ww) * {C} + ac] "
             f"if am < mend and ak < {K}{_inside('hh', 'ww', H, W, pads)} else f32(0.0)",
             "bn = n0 + tx",
             f"Bs[ty, tx] = {k.ref(g, 'ab', f'ar * {F} + bn')} if am < mend and bn < {F} else f32(0.0)"]
    body += [f"for m0 in range(mbeg, mend, {T}):"] + indent(loop + _product(T, bool(colsum)))
    body += ["kk = kk0 + ty", "n = n0 + tx", f"if kk < {K} and n < {F}:",
             f"    {pa}[z * {K * F} + kk * {F} + n] = acc"]
    if colsum:
        pb = k.array(partials[1], write=True)
        body += ["if by == 0:  # the first tile row also sums g's columns (bias gradient)",
                 "    As[ty, tx] = cs", "    cuda.syncthreads()", f"    if ty == 0 and n < {F}:",
                 "        t = f32(0.0)", f"        for q in range({T}):", "            t += As[q, tx]",
                 f"        {pb}[z * {F} + n] = t"]
    desc = (f"{out.name} = conv2d kernel gradient {kh}x{kw} stride {sh}x{sw} pads {pads}: implicit GEMM "
            f"[{K}, B*{OH * OW}] @ [B*{OH * OW}, {F}], {T}x{T} tiles, a partial per {CH} rows")
    if colsum:
        desc += f"; fused {colsum.out.name} = sum_to_last"
    p.add(k.finish(body, (Extent(0, F, T), Extent(0, K, T), Extent(OH * OW, 0, CH)), (T, T), desc))

    # the partials added up in chunk order: one thread per element of the kernel (and bias) gradient
    ops = [op] + ([colsum] if colsum else [])
    k = p.new_kernel("reduce", ops, out.name)
    nb = k.scalar("nb")
    total = K * F + (F if colsum else 0)
    src, dst = k.array(part), k.array(out, write=True)
    body = ["i = gi", f"nz = ({nb} * {OH * OW} + {CH - 1}) // {CH}", f"if i < {K * F}:",
            "    t = f32(0.0)", "    for z in range(nz):", f"        t += {src}[z * {K * F} + i]", f"    {dst}[i] = t"]
    if colsum:
        body += [f"elif i < {total}:", f"    j = i - {K * F}", "    t = f32(0.0)", "    for z in range(nz):",
                 f"        t += {k.array(partials[1])}[z * {F} + j]", f"    {k.array(colsum.out, write=True)}[j] = t"]
    p.add(k.finish(body, (Extent(0, total, p.cfg.threads),), (p.cfg.threads,),
                   f"{out.name}" + (f", {colsum.out.name}" if colsum else "") + ": the chunks' partial sums added"))


# ---------------------------------------------------------------- pooling

def emit_pool(p, i: int, op: Op):
    if not op.inputs[0].batched:
        raise CudaCodegenError(f"{op.prim} of an unbatched value")
    forward = op.prim in ("max_pool", "avg_pool")
    out = op.out
    chain = p.grow_chain(i, op, {out.id}, out.sample_size())
    k = p.new_kernel("pool", [op] + chain, out.name)
    (kh, kw), (sh, sw), pads = op.attrs["window"], op.attrs["strides"], op.attrs["pads"]
    pt, pl = pads[0], pads[2]
    _, H, W, C = op.inputs[0].shape if forward else out.shape
    _, OH, OW, _ = out.shape if forward else op.inputs[0].shape
    S = out.sample_size()
    nb = k.scalar("nb")
    inner = [f"r = i // {S}", f"c = i - r * {S}", f"pix = c // {C}", f"ch = c - pix * {C}"]
    if forward:
        x = op.inputs[0]
        xa = k.array(x)
        inner += [f"oh = pix // {OW}", f"ow = pix - oh * {OW}", f"h0 = oh * {sh} - {pt}", f"w0 = ow * {sw} - {pl}",
                  f"xrow = {k.row_base(x, 'r')}"]
        read = f"{xa}[xrow + (hh * {W} + ww) * {C} + ch]"
        # static trip counts (unrolled); the bounds tests only where there is padding
        loops = [f"for di in range({kh}):", "    hh = h0 + di", f"    for dj in range({kw}):", "        ww = w0 + dj"]
        inside = _inside("hh", "ww", H, W, pads).removeprefix(" and ")
        guard = [f"        if {inside}:"] if inside else []
        step = "    " * (3 if inside else 2)
        if op.prim == "max_pool":
            inner += ["pv = f32(-math.inf)"] + loops + guard + [f"{step}v = {read}", f"{step}if v > pv:",
                                                                 f"{step}    pv = v"]
        else:   # the window's elements inside the image, added in row-major order, over their count
            inner += ["pv = f32(0.0)"] + loops + guard + [f"{step}pv += {read}"]
            if inside:
                inner.append(f"pv = pv / f32((min(h0 + {kh}, {H}) - max(h0, 0)) * (min(w0 + {kw}, {W}) - max(w0, 0)))")
            else:
                inner.append(f"pv = pv / {lit(kh * kw)}")
        what = f"{'max' if op.prim == 'max_pool' else 'average'} over a {kh}x{kw} window, one thread per output"
    else:
        g = op.inputs[0]
        ga = k.array(g)
        inner += [f"h = pix // {W}", f"ph = h + {pt}", f"pw = pix - h * {W} + {pl}",
                  f"ohi = min(ph // {sh}, {OH - 1})", f"olo = max(ph - {kh - sh}, 0) // {sh}",
                  f"owhi = min(pw // {sw}, {OW - 1})", f"owlo = max(pw - {kw - sw}, 0) // {sw}",
                  f"grow = {k.row_base(g, 'r')}", "pv = f32(0.0)"]
        if op.prim == "max_pool_grad":
            x = op.inputs[1]
            inner.append(f"xrow = {k.row_base(x, 'r')}")
        # the covering windows in the reference's order: offsets in the window row-major,
        # so window positions from the last one back
        inner += ["for a in range(ohi - olo + 1):", "    oh = ohi - a", f"    h0 = oh * {sh} - {pt}",
                  "    for b in range(owhi - owlo + 1):", "        ow = owhi - b", f"        w0 = ow * {sw} - {pl}"]
        gread = f"{ga}[grow + (oh * {OW} + ow) * {C} + ch]"
        if op.prim == "avg_pool_grad":
            inner += [f"        cnt = (min(h0 + {kh}, {H}) - max(h0, 0)) * (min(w0 + {kw}, {W}) - max(w0, 0))",
                      f"        pv += {gread} / f32(cnt)"]
        else:   # the window's first largest element, padding never winning, as numpy's argmax
            inside = _inside("hh", "ww", H, W, pads).removeprefix(" and ")
            read = f"{k.array(x)}[xrow + (hh * {W} + ww) * {C} + ch]"
            inner += ["        bi = -1", "        bv = f32(-math.inf)", f"        for di in range({kh}):",
                      "            hh = h0 + di", f"            for dj in range({kw}):", "                ww = w0 + dj",
                      f"                v = {read} if {inside} else f32(-math.inf)" if inside
                      else f"                v = {read}",
                      "                if bi < 0 or v > bv:", "                    bv = v",
                      f"                    bi = di * {kw} + dj",
                      f"        if bi == (ph - h0 - {pt}) * {kw} + pw - w0 - {pl}:", f"            pv += {gread}"]
        what = (f"gradient of a {kh}x{kw} {'max' if op.prim == 'max_pool_grad' else 'average'} pooling, "
                "one thread per input element gathering from its windows")
    group_ids = {id(o) for o in [op] + chain}
    at = At("r", "c", "i", last=(C, "ch"))
    epi = [k.store(out, "r", "c", "pv")] if p.stored_outside(out, group_ids) else []
    epi += p.emit_chain(k, chain, {out.id: "pv"}, at, group_ids)
    body = ["i = gi", f"if i < {nb} * {S}:"] + indent(inner + epi)
    desc = f"{out.name}: {what} (stride {sh}x{sw}, pads {pads})"
    if chain:
        desc += "; then " + ", ".join(o.prim for o in chain)
    p.add(k.finish(body, (Extent(S, 0, p.cfg.threads),), (p.cfg.threads,), desc))
