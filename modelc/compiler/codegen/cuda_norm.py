"""Normalization on the `cuda` target (pure Python: writes kernel source, never
imports numba).

Batch normalization needs per-channel statistics over every row of a batch
before any element can be normalized, so `batch_normalize` and
`batch_normalize_grad` are "staged" lowerings: `emit_stats` writes a column
reduction kernel first, then the planner runs the op's elementwise part
(`_ew_batch_normalize`, `_ew_batch_normalize_grad`) as the head of an ordinary
elementwise chain (gamma, beta, an activation or its gradient fuse behind it).

Column reductions: a block owns `L` channels (lanes, L = the next power of two
of C, at most `col_lanes`) and `threads / L` row groups that stride down the
B*H*W rows, so a warp reads 32 consecutive floats of the NHWC buffer; the
partial sums meet in a shared-memory tree. Each block holds its channels'
complete sums, so the mean and then the biased variance are two passes in one
kernel (no grid-wide synchronisation, no atomics), and the moving averages of
the statistics that follow in the graph are updated by the same threads.

Layer normalization is a row lowering (`cuda_emit.RowBuilder`, one row per
group of lanes, rows = every position of the last axis); `scale_last` and
`normalize` are elementwise; a `moving_average` the statistics kernel could not
absorb gets `emit_moving`, one small kernel for a run of them.
"""
from __future__ import annotations

from modelc.compiler.codegen.cuda_emit import RowBuilder, last_index
from modelc.compiler.codegen.cuda_plan import CudaCodegenError, Extent, indent, lit, size_of
from modelc.compiler.ir import F32, Op, Value


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


# ---------------------------------------------------------------- elementwise lowerings

def _ew_scale_last(k, op, get, at):
    x, s = op.inputs
    return [], {op.out.id: f"{get(x)} * {k.ref(s, '0', last_index(k, x, at))}"}


def _normalized(k, x, mean, var, get, at, eps) -> str:
    col = last_index(k, x, at)
    return f"({get(x)} - {k.ref(mean, '0', col)}) / math.sqrt({k.ref(var, '0', col)} + {lit(eps)})"


def _ew_normalize(k, op, get, at):
    x, mean, var = op.inputs
    return [], {op.out.id: _normalized(k, x, mean, var, get, at, op.attrs["epsilon"])}


def _ew_batch_normalize(k, op, get, at):
    """xhat from the batch statistics `emit_stats` stored (outputs 1 and 2)."""
    x = op.inputs[0]
    return [], {op.outputs[0].id: _normalized(k, x, op.outputs[1], op.outputs[2], get, at, op.attrs["epsilon"])}


def _ew_batch_normalize_grad(k, op, get, at):
    """inv * (g - mean(g) - xhat * mean(g * xhat)), the two means from `emit_stats`."""
    g, xhat, var = op.inputs
    means = k.p.aux[id(op)]
    C = g.shape[-1]
    col = last_index(k, g, at)
    inv = k.tmp("inv")
    lines = [f"{inv} = f32(1.0) / math.sqrt({k.ref(var, '0', col)} + {lit(op.attrs['epsilon'])})"]
    expr = (f"{inv} * (({get(g)} - {k.ref(means, '0', col)}) - {get(xhat)} * "
            f"{k.ref(means, '0', f'{C} + {col}')})")
    return lines, {op.out.id: expr}


# ---------------------------------------------------------------- row lowerings (layer normalization)

def _row_var(rb: RowBuilder, var: Value) -> str:
    """The per-row variance (shape x.shape[:-1]: one element per row, at flat index r);
    the register value when this kernel computed it (lane 0 stores it for later kernels)."""
    known = rb.scalars.get(rb.k.p.base(var).id)
    if known is not None or rb.rps == 1:
        return known or rb.s(var)
    return rb.scalar(rb.k.ref(var, "rs", f"r - rs * {rb.rps}"))


def _row_layer_normalize(rb: RowBuilder, op: Op):
    x = op.inputs[0]
    xhat, var = op.outputs
    C, eps = rb.C, lit(op.attrs["epsilon"])
    mean = rb.scalar(f"{rb.row_sum(lambda: [], rb.x(x))} / f32({C})")
    d = rb.tmp("d")
    v = rb.scalar(f"{rb.row_sum(lambda: [f'{d} = {rb.x(x)} - {mean}'], f'{d} * {d}')} / f32({C})")
    rb.loop([rb.store(xhat, f"({rb.x(x)} - {mean}) / math.sqrt({v} + {eps})")])
    rb.scalars[var.id] = v
    if rb.k.p.stored_outside(var, rb.group_ids):
        rb.lines += ["if lane == 0 and valid:", f"    {rb.k.array(var, write=True)}[r] = {v}"]


def _row_layer_normalize_grad(rb: RowBuilder, op: Op):
    g, xhat, var = op.inputs
    C = rb.C
    m1 = rb.scalar(f"{rb.row_sum(lambda: [], rb.x(g))} / f32({C})")
    m2 = rb.scalar(f"{rb.row_sum(lambda: [], f'{rb.x(g)} * {rb.x(xhat)}')} / f32({C})")
    inv = rb.init(f"f32(1.0) / math.sqrt({_row_var(rb, var)} + {lit(op.attrs['epsilon'])})", "inv")
    rb.loop([rb.store(op.out, f"{inv} * (({rb.x(g)} - {m1}) - {rb.x(xhat)} * {m2})")])


NORM_ELEMENTWISE = {"scale_last": _ew_scale_last, "normalize": _ew_normalize}
NORM_STAGED = {"batch_normalize": _ew_batch_normalize, "batch_normalize_grad": _ew_batch_normalize_grad}
NORM_ROWS = {"layer_normalize": _row_layer_normalize, "layer_normalize_grad": _row_layer_normalize_grad}


# ---------------------------------------------------------------- column statistics kernels

def _moving_update(k, moving: Value, stat: str, j: str, momentum: float) -> str:
    """moving = moving * momentum + stat * (1 - momentum), (1 - momentum) rounded from float64
    as the reference does."""
    arr = k.array(moving, write=True)
    return f"{arr}[{j}] = {arr}[{j}] * {lit(momentum)} + {stat} * {lit(1 - momentum)}"


def _absorbable_moving(p, op: Op) -> list[Op]:
    """The moving averages of this batch_normalize's mean and variance that can run in its
    statistics kernel: nothing between here and there reads or writes the moving value."""
    here = p.pos[id(op)]
    stats = {op.outputs[1].id, op.outputs[2].id}
    found = []
    for v in op.outputs[1:]:
        for user in p.users.get(v.id, []):
            if user.prim != "moving_average" or id(user) in p.claimed or p.base(user.inputs[1]).id not in stats:
                continue
            there = p.pos[id(user)]
            moving = p.base(user.inputs[0])
            between = p.ops[here + 1:there]
            if any(moving.id in {p.base(w).id for w in o.inputs} for o in between):
                continue
            if not p.no_writes_between(here + 1, there, [moving]):
                continue
            found.append(user)
    return found


def emit_stats(p, op: Op):
    """The column reduction a staged op's elementwise part reads: batch_normalize's mean
    and biased variance (two passes) and the moving averages of them; batch_normalize_grad's
    means of g and g * xhat (one pass, stored in a buffer of 2C)."""
    x = op.inputs[0]
    if not x.batched:
        raise CudaCodegenError(f"{op.prim} of an unbatched value")
    C = x.shape[-1]
    rps = size_of(x.shape[1:-1])
    CL = min(p.cfg.col_lanes, _pow2_at_least(C))
    CR = max(1, p.cfg.threads // CL)
    forward = op.prim == "batch_normalize"
    if forward:
        moving = _absorbable_moving(p, op)
        p.claimed.update(id(m) for m in moving)
        ops = [op] + moving
        k = p.new_kernel("bnstats", ops, op.outputs[0].name)
    else:
        means = Value(f"{op.out.name}.means", F32, (2 * C,), "temp")
        p.aux[id(op)] = means
        ops = [Op("column_means", (op.inputs[0], op.inputs[1]), (means,))]
        k = p.new_kernel("bnstats", ops, op.out.name)
    nb = k.scalar("nb")
    rows = f"{nb} * {rps}" if rps != 1 else nb

    def item(v):
        if k.p.data.get(k.p.base(v).id) is None:
            return f"{k.array(v)}[row * {C} + col]"
        return k.ref(v, f"row // {rps}", f"(row - (row // {rps}) * {rps}) * {C} + col")

    def tree(buffers):
        lines, half = [], CR // 2
        while half >= 1:
            lines += [f"if w < {half}:"] + [f"    red[{b}, w, lane] += red[{b}, w + {half}, lane]" for b in buffers]
            lines.append("cuda.syncthreads()")
            half //= 2
        return lines

    body = [f"red = cuda.shared.array((2, {CR}, {CL}), float32)", "lane = tx", "w = ty",
            f"col = bx * {CL} + lane", f"ok = col < {C}", f"nrows = {rows}", "s0 = f32(0.0)"]
    loop = f"    for row in range(w, nrows, {CR}):"
    if forward:
        body += ["if ok:", loop, f"        s0 += {item(x)}", "red[0, w, lane] = s0", "cuda.syncthreads()"]
        body += tree([0])
        body += ["mean = red[0, 0, lane] / f32(nrows)", "s1 = f32(0.0)",
                 "if ok:", loop, f"        d = {item(x)} - mean", "        s1 += d * d",
                 "red[1, w, lane] = s1", "cuda.syncthreads()"]
        body += tree([1])
        body += ["var = red[1, 0, lane] / f32(nrows)", "if w == 0 and ok:"]
        store = [f"{k.array(op.outputs[1], write=True)}[col] = mean",
                 f"{k.array(op.outputs[2], write=True)}[col] = var"]
        for m in moving:
            stat = "mean" if p.base(m.inputs[1]).id == op.outputs[1].id else "var"
            store.append(_moving_update(k, m.inputs[0], stat, "col", m.attrs["momentum"]))
        body += indent(store)
        desc = (f"batch statistics of {C} channels over {rows} rows ({CL} lanes x {CR} rows per block), "
                "mean then biased variance" + (f"; {len(moving)} moving averages" if moving else ""))
    else:
        g, xhat = op.inputs[0], op.inputs[1]
        body += ["s1 = f32(0.0)", "if ok:", loop, f"        gv = {item(g)}", "        s0 += gv",
                 f"        s1 += gv * {item(xhat)}", "red[0, w, lane] = s0", "red[1, w, lane] = s1",
                 "cuda.syncthreads()"]
        body += tree([0, 1])
        arr = k.array(means, write=True)
        body += ["if w == 0 and ok:", f"    {arr}[col] = red[0, 0, lane] / f32(nrows)",
                 f"    {arr}[{C} + col] = red[1, 0, lane] / f32(nrows)"]
        desc = f"column means of g and g * xhat over {rows} rows, {C} channels ({CL} lanes x {CR} rows per block)"
    p.add(k.finish(body, (Extent(0, C, CL),), (CL, CR), desc))


def emit_moving(p, group: list[Op]):
    """Moving averages the statistics kernel did not absorb: one thread per element of
    the concatenation of the moving values."""
    k = p.new_kernel("moving", group, group[0].inputs[0].name)
    body = ["i = gi"]
    total = 0
    for n, op in enumerate(group):
        moving, stat = op.inputs
        if moving.batched or stat.batched:
            raise CudaCodegenError("a moving average of a batched value")
        size = size_of(moving.shape)
        body += [f"{'if' if n == 0 else 'elif'} i < {total + size}:", f"    j = i - {total}",
                 "    " + _moving_update(k, moving, k.ref(stat, "0", "j"), "j", op.attrs["momentum"])]
        total += size
    p.add(k.finish(body, (Extent(0, total, p.cfg.threads),), (p.cfg.threads,),
                   f"moving averages of {len(group)} statistics ({total} elements)"))
