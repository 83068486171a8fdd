"""The fusion planner of the `cuda` target: a graph of the IR becomes the source
of `numba.cuda` kernels and a launch plan (`plan_graph`; `plans_for` for a
program's three graphs). Pure Python: it never imports numba.

Grouping (one kernel each), with the kernel templates each group is written in:
  * matmul, 16x16 shared-memory tiles, with an epilogue chain of elementwise ops
    on its output (bias + activation; activation gradient on an incoming
    gradient) and, for `a^T @ g` weight gradients, the bias gradient
    `sum_to_last(g)` fused from the same shared-memory tiles of `g`;
  * elementwise chains that no matmul absorbed;
  * row groups: softmax / log-softmax, losses and their gradients, metrics, the
    batch mean (accumulated on the device) and its gradient, one row per group
    of lanes, reductions in shared memory;
  * column reductions (`sum_to_last` not fused), concat / slice copies;
  * the optimizer: one kernel updates every parameter;
  * convolutions (implicit GEMMs on the matmul's tiles, with the same epilogues
    and fused bias gradient) and pooling: `cuda_image`; batch normalization's
    column statistics, moving averages, layer normalization: `cuda_norm`.

Data inputs are read through the epoch's index, so the gather happens in the
first matmul's tile loads and in the loss kernel's label reads. What each
primitive turns into is `cuda_rules.LOWERINGS`.
"""
from __future__ import annotations

from modelc.compiler.codegen import cuda_image, cuda_norm
from modelc.compiler.codegen.cuda_emit import At, KernelBuilder, RowBuilder, ident
from modelc.compiler.codegen.cuda_formulas import UPDATES
from modelc.compiler.codegen.cuda_plan import (ARG_BYTES, GPU_CONFIG, PARAM_BYTES, Buffer, CudaCodegenError, Extent,
                                               Kernel, LaunchConfig, Plan, StepScalars, indent, lit, size_of)
from modelc.compiler.codegen.cuda_rules import LOWERINGS
from modelc.compiler.ir import BATCH, Graph, Op, Value
from modelc.compiler.primitives import PRIMITIVES


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


class _Planner:
    """One graph's lowering: groups its ops into kernels in graph order (`run`),
    writes each group with its template (`emit_*`), and assembles the `Plan`.
    It is also what `KernelBuilder` asks about values (`base`, `data`, `const`,
    `gather`, `stored_outside`, `sum_slot`)."""

    def __init__(self, graph: Graph, config: LaunchConfig, gather: bool, name: str):
        self.graph, self.cfg, self.gather, self.gname = graph, config, gather, name
        self.alias: dict[int, Value] = {}
        self.const: dict[int, str] = {}
        self.data: dict[int, str] = {}
        for v in graph.inputs:
            if v.role == "input":
                self.data[v.id] = "x"
            elif v.role == "target":
                self.data[v.id] = "y"
        ops = []
        for op in graph.ops:
            kind = LOWERINGS.get(op.prim)
            if kind is None:
                raise CudaCodegenError(f"no lowering for the primitive '{op.prim}'")
            if kind.kind == "alias":
                self.alias[op.out.id] = self.base(op.inputs[0])
            elif kind.kind == "constant":
                self.const[op.out.id] = lit(op.attrs["value"])
            ops.append(op)
        self.ops = ops
        self.pos = {id(op): i for i, op in enumerate(ops)}
        self.users: dict[int, list[Op]] = {}
        for op in ops:
            if LOWERINGS[op.prim].kind in ("alias", "constant"):
                continue
            for v in op.inputs:
                self.users.setdefault(self.base(v).id, []).append(op)
        self.outputs = {self.base(v).id for v in graph.outputs.values()}
        self.producer = {v.id: op for op in ops for v in op.outputs}
        self.slots: dict[int, int] = {}
        self.kernels: list[Kernel] = []
        self.stored: set[int] = set()
        self.step_scalars: list[StepScalars] = []
        self.aux: dict[int, Value] = {}      # op id -> what its staged reduction left for its elementwise part

    # values -----------------------------------------------------------
    def base(self, v: Value) -> Value:
        return self.alias.get(v.id, v)

    def stored_outside(self, v: Value, group_ids: set[int]) -> bool:
        """Whether a value made in a group must reach memory: something outside reads it."""
        b = self.base(v)
        return b.id in self.outputs or any(id(u) not in group_ids for u in self.users.get(b.id, []))

    def sum_slot(self, op: Op) -> int:
        keys = [k for k, v in self.graph.outputs.items() if self.base(v).id == op.out.id]
        if not keys:
            raise CudaCodegenError(f"the batch mean %{op.out.name} feeds something other than a result")
        if op.out.id not in self.slots:
            self.slots[op.out.id] = len(self.slots)
        return self.slots[op.out.id]

    def available(self, v: Value, anchor: int, local: set[int]) -> bool:
        """v can be read by a kernel placed at op index `anchor`."""
        b = self.base(v)
        if b.id in local or b.id in self.const or b.id in self.data or b.role in ("param", "stat", "state", "scalar"):
            return True
        prod = self.producer.get(b.id)
        return prod is not None and self.pos[id(prod)] < anchor and id(prod) in self.done

    def no_writes_between(self, lo: int, hi: int, values) -> bool:
        ids = {self.base(v).id for v in values}
        return not any(w.id in ids for op in self.ops[lo:hi] for w in op.writes)

    # grouping ---------------------------------------------------------
    def grow_chain(self, anchor: int, tail: Op, local: set[int], same_size: int) -> list[Op]:
        """Elementwise ops that can run in the same kernel after `tail`, moved up to `anchor`."""
        chain = []
        while True:
            out = tail.outputs[0]
            nxt = None
            for user in self.users.get(out.id, []):
                if id(user) in self.claimed or LOWERINGS[user.prim].kind != "elementwise":
                    continue
                if user.outputs[0].sample_size() != same_size or user.outputs[0].batched != out.batched:
                    continue
                if not all(self.available(v, anchor, local) for v in user.inputs if self.base(v).id != out.id):
                    continue
                if not self.no_writes_between(anchor, self.pos[id(user)], user.inputs):
                    continue
                nxt = user
                break
            if nxt is None:
                return chain
            chain.append(nxt)
            self.claimed.add(id(nxt))
            local.update(v.id for v in nxt.outputs)
            tail = nxt

    def find_colsum(self, op: Op) -> Op | None:
        """sum_to_last(g) for the weight gradient a^T @ g (or a convolution's kernel
        gradient): the column sums of g come from the same shared-memory tiles of g
        (blocks in the first tile row)."""
        if op.prim == "matmul" and (not op.attrs.get("ta") or op.attrs.get("tb")):
            return None
        g = self.base(op.inputs[1])
        if not g.batched or g.rank != (2 if op.prim == "matmul" else 4):
            return None
        here = self.pos[id(op)]
        for cand in self.users.get(g.id, []):
            if cand.prim != "sum_to_last" or id(cand) in self.claimed:
                continue
            there = self.pos[id(cand)]
            lo, hi = min(here, there), max(here, there)
            if there < here and any(cand.out.id in {self.base(v).id for v in u.inputs}
                                    for u in self.ops[lo + 1:hi]):
                continue
            if not self.no_writes_between(lo, hi, cand.inputs):
                continue
            return cand
        return None

    def run(self) -> Plan:
        self.claimed: set[int] = set()
        self.done: set[int] = set()
        colsums = {}
        for op in self.ops:
            if op.prim in ("matmul", "conv2d_kernel_grad"):
                cand = self.find_colsum(op)
                if cand is not None:
                    colsums[id(op)] = cand
                    self.claimed.add(id(cand))
        i = 0
        while i < len(self.ops):
            op = self.ops[i]
            kind = LOWERINGS[op.prim].kind
            if id(op) in self.done or kind in ("alias", "constant"):
                self.done.add(id(op))
                i += 1
                continue
            if id(op) in self.claimed:      # runs later, inside the kernel that claimed it
                i += 1
                continue
            if kind == "staged":            # its column reduction first, then an elementwise chain
                cuda_norm.emit_stats(self, op)
            if kind == "matmul":
                self.emit_matmul(i, op, colsums.get(id(op)))
            elif kind == "conv":
                cuda_image.emit_conv(self, i, op, colsums.get(id(op)))
            elif kind == "pool":
                cuda_image.emit_pool(self, i, op)
            elif kind in ("elementwise", "staged"):
                self.claimed.add(id(op))
                local = {v.id for v in op.outputs}
                chain = [op] + self.grow_chain(i, op, local, op.outputs[0].sample_size())
                self.emit_elementwise(chain)
            elif kind == "row":
                self.emit_rows(self.row_group(i))
            elif kind == "colsum":
                self.emit_colsum(op)
            elif kind == "sumsq":
                self.emit_sum_squares(op)
            elif kind == "copy":
                self.emit_copy(op)
            elif kind in ("update", "moving"):
                group = [op]
                j = i + 1
                while j < len(self.ops) and self.ops[j].prim == op.prim and self.ops[j].attrs == op.attrs:
                    group.append(self.ops[j])
                    j += 1
                if kind == "update":
                    self.emit_update(group)
                else:
                    cuda_norm.emit_moving(self, group)
            i += 1
        self.outputs_plan()
        return self.finish()

    def row_group(self, i: int) -> list[Op]:
        """Consecutive row ops sharing one row shape. `mean` / `mean_grad` work on
        per-sample scalars, so they join only groups whose rows are samples."""
        geometry = None
        per_sample_ops = False
        group = []
        for op in self.ops[i:]:
            low = LOWERINGS[op.prim]
            if id(op) in self.done or low.kind in ("alias", "constant"):
                continue
            if id(op) in self.claimed:
                continue
            if low.kind != "row":
                break
            g = self.row_geometry(op)
            if g is None:
                if geometry is not None and geometry[0] != 1:
                    break
                per_sample_ops = True
            elif geometry is None:
                if per_sample_ops and g[0] != 1:
                    break
                geometry = g
            elif g != geometry:
                break
            group.append(op)
        return group

    def row_geometry(self, op: Op):
        low = LOWERINGS[op.prim]
        if low.geometry == "any":
            return None
        x = op.inputs[0] if low.geometry == "last" else op.inputs[1]
        if not x.batched:
            raise CudaCodegenError(f"{op.prim} on an unbatched value")
        if low.geometry == "last":
            return (size_of(x.shape[1:-1]), x.shape[-1])
        return (1, x.sample_size())

    # emission ---------------------------------------------------------
    def new_kernel(self, kind: str, ops: list[Op], label: str) -> KernelBuilder:
        name = f"k{len(self.kernels):02d}_{kind}_{ident(label)}"[:60]
        return KernelBuilder(self, name, kind, ops)

    def add(self, kernel: Kernel):
        for op in kernel.ops:
            self.done.add(id(op))
        self.stored |= kernel.writes
        self.kernels.append(kernel)

    def emit_chain(self, k: KernelBuilder, chain: list[Op], local: dict[int, str], at: At,
                   group_ids: set[int]) -> list[str]:
        lines = []
        for op in chain:
            def get(v, local=local):
                b = self.base(v)
                return local.get(b.id) or k.ref(v, at.r, at.c)
            stmts, outs = LOWERINGS[op.prim].emit(k, op, get, at)
            lines += stmts
            for value in (v for v in op.outputs if v.id in outs):
                expr = outs[value.id]
                var = k.tmp("e")
                lines.append(f"{var} = {expr}")
                local[value.id] = var
                if self.stored_outside(value, group_ids):
                    lines.append(k.store(value, at.r, at.c, var))
        return lines

    def emit_matmul(self, i: int, op: Op, colsum: Op | None):
        a, b = op.inputs
        ta, tb = bool(op.attrs.get("ta")), bool(op.attrs.get("tb"))
        out = op.out
        M, N = out.shape
        K = a.shape[0] if ta else a.shape[1]
        if N == BATCH:
            raise CudaCodegenError("a matmul whose columns run over the batch")
        local_ids = {out.id}
        chain = self.grow_chain(i, op, local_ids, out.sample_size())
        ops = [op] + chain + ([colsum] if colsum else [])
        k = self.new_kernel("matmul", ops, out.name)
        T = self.cfg.tile
        Ms, Ks, Ns = k.dim(M), k.dim(K), str(N)

        body = [f"As = cuda.shared.array(({T}, {T + 1}), float32)",
                f"Bs = cuda.shared.array(({T}, {T + 1}), float32)",
                f"m0 = by * {T}", f"n0 = bx * {T}",
                "acc = f32(0.0)"]
        if colsum:
            body.append("cs = f32(0.0)")
        # Loop-invariant row starts are hoisted (the gathered input's index is read once).
        pre, loop = [], []
        # A tile: As[i, q] = op(A)[m0 + i, k0 + q]; loads run along A's rows in memory.
        if not ta:   # A is [M, K]: thread (ty, tx) loads A[m0+ty, k0+tx]
            pre.append(f"ai = m0 + ty")
            row = k.row_base(a, "ai") if self.base(a).batched else f"ai * {a.shape[1]}"
            pre.append(f"arow = {row} if ai < {Ms} else 0")
            loop += ["ak = k0 + tx",
                     f"As[ty, tx] = {k.array(a)}[arow + ak] if ai < {Ms} and ak < {Ks} else f32(0.0)"]
        else:        # A is [K, M]: thread (ty, tx) loads A[k0+ty, m0+tx], stored transposed
            loop += ["ak = k0 + ty", "ai = m0 + tx",
                     f"As[tx, ty] = {k.ref2(a, 'ak', 'ai')} if ak < {Ks} and ai < {Ms} else f32(0.0)"]
        # B tile: Bs[q, j] = op(B)[k0 + q, n0 + j]
        if not tb:   # B is [K, N]: thread (ty, tx) loads B[k0+ty, n0+tx]
            loop += ["bk = k0 + ty", "bj = n0 + tx",
                     f"Bs[ty, tx] = {k.ref2(b, 'bk', 'bj')} if bk < {Ks} and bj < {Ns} else f32(0.0)"]
        else:        # B is [N, K]: thread (ty, tx) loads B[n0+ty, k0+tx], stored transposed
            pre.append("bj = n0 + ty")
            row = k.row_base(b, "bj") if self.base(b).batched else f"bj * {b.shape[1]}"
            pre.append(f"brow = {row} if bj < {Ns} else 0")
            loop += ["bk = k0 + tx",
                     f"Bs[tx, ty] = {k.array(b)}[brow + bk] if bj < {Ns} and bk < {Ks} else f32(0.0)"]
        loop += ["cuda.syncthreads()", f"for q in range({T}):", "    acc += As[ty, q] * Bs[q, tx]"]
        if colsum:
            loop.append("cs += Bs[ty, tx]")
        loop.append("cuda.syncthreads()")
        body += pre + [f"for k0 in range(0, {Ks}, {T}):"] + indent(loop)
        body += ["m = m0 + ty", "n = n0 + tx"]
        if out.batched:
            at = At("m", "n", f"m * {N} + n")
        else:
            at = At("0", f"m * {N} + n", f"m * {N} + n")
        group_ids = {id(o) for o in ops}
        local = {out.id: "acc"}
        epi = []
        if self.stored_outside(out, group_ids):
            epi.append(k.store(out, at.r, at.c, "acc"))
        epi += self.emit_chain(k, chain, local, at, group_ids)
        body += [f"if m < {Ms} and n < {Ns}:"] + indent(epi or ["pass"])
        if colsum:
            arr = k.array(colsum.out, write=True)
            body += ["if by == 0:  # the first tile row also sums g's columns (bias gradient)",
                     "    As[ty, tx] = cs", "    cuda.syncthreads()",
                     f"    if ty == 0 and n < {Ns}:", "        t = f32(0.0)",
                     f"        for q in range({T}):", "            t += As[q, tx]",
                     f"        {arr}[n] = t"]
        desc = f"{out.name} = {'A^T' if ta else 'A'} @ {'B^T' if tb else 'B'}, {T}x{T} shared-memory tiles"
        if chain:
            desc += "; epilogue: " + ", ".join(o.prim + (f"({o.attrs['fn']})" if "fn" in o.attrs else "")
                                               for o in chain)
        if colsum:
            desc += f"; fused {colsum.out.name} = sum_to_last"
        grid = (Extent(0, N, T), Extent(1 if M == BATCH else 0, 0 if M == BATCH else M, T))
        self.add(k.finish(body, grid, (T, T), desc))

    def emit_elementwise(self, chain: list[Op]):
        first = chain[0]
        out = first.outputs[0]
        k = self.new_kernel("ew", chain, out.name)
        S = out.sample_size()
        tpb = self.cfg.threads
        group_ids = {id(o) for o in chain}
        if out.batched:
            nb = k.scalar("nb")
            body = ["i = gi", f"if i < {nb} * {S}:",
                    f"    r = i // {S}", f"    c = i - r * {S}"]
            at = At("r", "c", "i")
            grid = (Extent(S, 0, tpb),)
        else:
            body = ["i = gi", f"if i < {S}:", "    c = i"]
            at = At("0", "c", "i")
            grid = (Extent(0, S, tpb),)
        body += indent(self.emit_chain(k, chain, {}, at, group_ids))
        desc = "elementwise: " + ", ".join(o.prim for o in chain)
        self.add(k.finish(body, grid, (tpb,), desc))

    def emit_rows(self, group: list[Op]):
        geometry = None
        for op in group:
            geometry = geometry or self.row_geometry(op)
        rps, C = geometry or (1, 1)
        L = min(self.cfg.max_lanes, _pow2_at_least(C))
        R = max(1, self.cfg.row_threads // L)
        k = self.new_kernel("rows", group, group[0].outputs[0].name)
        rb = RowBuilder(k, group, rps, C, L, R)
        for op in group:
            LOWERINGS[op.prim].emit(rb, op)
        nb = k.scalar("nb")
        rows = f"{nb} * {rps}" if rps != 1 else nb
        head = ["lane = tx", "w = ty", f"r = bx * {R} + w",
                f"valid = r < {rows}", f"cend = {C} if valid else 0"]
        if rps != 1:
            head += [f"rs = r // {rps}", f"ro = (r - rs * {rps}) * {C}"]
        if rb.uses_red:
            head.insert(0, f"red = cuda.shared.array((2, {R}, {L}), float32)")
        if rb.uses_redi:
            head.insert(0, f"redi = cuda.shared.array((2, {R}, {L}), int32)")
        tail = []
        if rb.means:
            sums = k.scalar("sums")
            tail += [f"acc = cuda.shared.array(({len(rb.means)}, {R}), float32)", "if lane == 0:"]
            tail += [f"    acc[{j}, w] = {var} if valid else f32(0.0)" for j, (var, _) in enumerate(rb.means)]
            tail += ["cuda.syncthreads()", "if lane == 0 and w == 0:  # one atomic per block and result"]
            for j, (_, slot) in enumerate(rb.means):
                tail += [f"    t = f32(0.0)", f"    for q in range({R}):", f"        t += acc[{j}, q]",
                         f"    cuda.atomic.add({sums}, {slot}, float64(t))"]
        desc = f"rows of {C} ({L} lanes x {R} rows per block): " + ", ".join(o.prim for o in group)
        grid = (Extent(rps, 0, R),)
        self.add(k.finish(head + rb.lines + tail, grid, (L, R), desc))

    def emit_colsum(self, op: Op):
        x = op.inputs[0]
        C = x.shape[-1]
        rps = size_of(x.shape[1:-1]) if x.batched else size_of(x.shape[:-1])
        k = self.new_kernel("colsum", [op], op.out.name)
        CL, CR = self.cfg.col_lanes, self.cfg.col_rows
        if x.batched:
            rows = f"{k.scalar('nb')} * {rps}" if rps != 1 else k.scalar("nb")
            item = (k.ref(x, "row", "col") if rps == 1
                    else k.ref(x, f"row // {rps}", f"(row - (row // {rps}) * {rps}) * {C} + col"))
        else:
            rows = str(rps)
            item = k.ref(x, "0", f"row * {C} + col")
        arr = k.array(op.out, write=True)
        body = [f"red = cuda.shared.array(({CR}, {CL}), float32)",
                "lane = tx", "w = ty", f"col = bx * {CL} + lane",
                "part = f32(0.0)", f"if col < {C}:", f"    for row in range(w, {rows}, {CR}):",
                f"        part += {item}", "red[w, lane] = part", "cuda.syncthreads()",
                f"if w == 0 and col < {C}:", "    t = f32(0.0)", f"    for q in range({CR}):",
                "        t += red[q, lane]", f"    {arr}[col] = t"]
        self.add(k.finish(body, (Extent(0, C, CL),), (CL, CR), f"{op.out.name} = column sums"))

    def emit_sum_squares(self, op: Op):
        """The sum of squares of an unbatched value (a gradient, for norm clipping) into its
        one-element buffer: one block strides over the elements, then a shared-memory tree."""
        x = op.inputs[0]
        if x.batched:
            raise CudaCodegenError("sum_squares of a batched value")
        n, tpb = size_of(x.shape), self.cfg.threads
        k = self.new_kernel("sumsq", [op], op.out.name)
        src, arr = k.array(x), k.array(op.out, write=True)
        body = [f"red = cuda.shared.array({tpb}, float32)", "t = tx", "part = f32(0.0)",
                f"for i in range(t, {n}, {tpb}):", f"    part += {src}[i] * {src}[i]",
                "red[t] = part", "cuda.syncthreads()"]
        half = tpb // 2
        while half >= 1:
            body += [f"if t < {half}:", f"    red[t] += red[t + {half}]", "cuda.syncthreads()"]
            half //= 2
        body += ["if t == 0:", f"    {arr}[0] = red[0]"]
        self.add(k.finish(body, (Extent(0, 1, 1),), (tpb,), f"{op.out.name} = sum of squares"))

    def emit_copy(self, op: Op):
        """concat / slice as index remaps over the flat sample: with `inner` the
        elements after the axis, element (o, a, i) of the output reads its input at
        axis position a (minus the input's offset for concat, plus start for slice)."""
        out = op.out
        k = self.new_kernel("copy", [op], out.name)
        axis = op.attrs["axis"]
        S = out.sample_size()
        inner = size_of(out.shape[axis + 1:])
        span_out = out.shape[axis] * inner
        tpb = self.cfg.threads
        nb = k.scalar("nb")
        body = ["i = gi", f"if i < {nb} * {S}:", f"    r = i // {S}", f"    cs = i - r * {S}",
                f"    o = cs // {span_out}", f"    col = cs - o * {span_out}"]
        if op.prim == "slice":
            x = op.inputs[0]
            span_in = x.shape[axis] * inner
            src = k.ref(x, "r", f"o * {span_in} + col + {op.attrs['start'] * inner}")
            body.append("    " + k.store(out, "r", "cs", src))
        else:
            start = 0
            for n, x in enumerate(op.inputs):
                span_in = x.shape[axis] * inner
                test = "if" if n == 0 else "elif"
                cond = f"col < {start + span_in}" if n < len(op.inputs) - 1 else ""
                body.append(f"    {test} {cond}:" if cond else "    else:")
                src = k.ref(x, "r", f"o * {span_in} + col - {start}")
                body.append("        " + k.store(out, "r", "cs", src))
                start += span_in
        if not out.batched:
            raise CudaCodegenError(f"{op.prim} of unbatched values")
        self.add(k.finish(body, (Extent(S, 0, tpb),), (tpb,), f"{op.prim} on axis {axis}"))

    def emit_update(self, group: list[Op]):
        """One kernel for every parameter (thread i updates element i of the concatenation of
        the parameters; the segment test uses static offsets), split into several when their
        arrays would pass the launch's 4 KB of arguments."""
        prim = group[0].prim
        low = UPDATES[prim]
        gi = len(self.step_scalars)
        self.step_scalars.append(StepScalars(prim, dict(group[0].attrs), low.scalars))
        stateful = len(PRIMITIVES[prim].formula({}).state)
        per_op = ARG_BYTES["f32[]"] * (3 + stateful)        # w, g, the state, a clip norm's sum of squares
        room = max(1, (PARAM_BYTES - ARG_BYTES["f32"] * len(low.scalar_names)) // per_op)
        for first in range(0, len(group), room):
            self._update_kernel(group[first:first + room], prim, low, gi, stateful)

    def _update_kernel(self, group: list[Op], prim: str, low, gi: int, stateful: int):
        k = self.new_kernel("update", group, prim)
        names = {name: k.param(("opt", gi, j), "f32", name) for j, name in enumerate(low.scalar_names)}
        total = 0
        body = ["i = gi"]
        for n, op in enumerate(group):
            w, g, state, extra = op.inputs[0], op.inputs[1], op.inputs[2:2 + stateful], op.inputs[3 + stateful:]
            size = size_of(w.shape)
            arrays = dict(names, w=k.array(w, write=True), g=k.array(g), j="j")
            if extra:      # the sum of squares that norm clipping reads
                arrays["sumsq"] = f"{k.array(extra[0])}[0]"
            arrays.update({f"s{q}": k.array(s, write=True) for q, s in enumerate(state)})
            test = "if" if n == 0 else "elif"
            body.append(f"{test} i < {total + size}:  # {w.name}")
            body += indent([f"j = i - {total}"] + low.lines(group[0].attrs, arrays))
            total += size
        self.add(k.finish(body, (Extent(0, total, self.cfg.threads),), (self.cfg.threads,),
                          f"{prim} of {len(group)} parameters ({total} elements)"))

    def outputs_plan(self):
        self.out_plan: dict[str, tuple] = {}
        for key, v in self.graph.outputs.items():
            b = self.base(v)
            prod = self.producer.get(b.id)
            if prod is not None and prod.prim == "mean":
                self.out_plan[key] = ("sum", self.slots[b.id])
                continue
            if b.id not in self.stored:
                if not b.batched:
                    raise CudaCodegenError(f"the output {key} is not computed on the device")
                copy_out = Value(f"{b.name}.out", b.dtype, b.shape, "temp")
                copy = Op("copy", (b,), (copy_out,))
                self.producer[copy_out.id] = copy
                self.pos[id(copy)] = len(self.ops)
                self.outputs.add(copy_out.id)
                self.emit_elementwise([copy])
                b = copy_out
            self.out_plan[key] = ("buffer", b.id)

    def finish(self) -> Plan:
        # Every buffer a kernel reads must have been written by an earlier kernel (a row
        # kernel may re-read its own row vectors: each lane reads only what it wrote).
        written: set[int] = set()
        values = {v.id: v for v in self.graph.values()}
        for kern in self.kernels:
            for vid in kern.reads:
                v = values.get(vid)
                if v is not None and v.role in ("param", "stat", "state"):
                    continue
                if vid not in written and not (kern.kind == "rows" and vid in kern.writes):
                    name = v.name if v is not None else vid
                    raise CudaCodegenError(f"internal: kernel {kern.name} reads %{name} before it is written")
            written |= kern.writes
        buffers: dict[int, Buffer] = {}
        every = dict(values)
        for kern in self.kernels:
            for op in kern.ops:
                for v in op.outputs:
                    every.setdefault(v.id, v)
        for vid in written:
            v = every[vid]
            if v.role in ("param", "stat", "state"):
                continue
            buffers[vid] = Buffer(v, v.batched, v.sample_size(), v.dtype)
        header = ["import math", "from numba import cuda, float32, float64, int32, int64, uint64", "",
                  "f32 = float32", "u64 = uint64", "",
                  f"# generated by modelc for graph '{self.gname}' ({'gathered' if self.gather else 'contiguous'}"
                  f" inputs); launch config {self.cfg}", ""]
        source = "\n".join(header) + "\n\n" + "\n\n".join(kk.source for kk in self.kernels)
        n_sums = len(self.slots)
        return Plan(self.graph, self.cfg, self.gather, self.kernels, buffers, dict(self.alias), dict(self.data),
                    self.out_plan, n_sums, self.step_scalars, source)


def plan_graph(graph: Graph, config: LaunchConfig = GPU_CONFIG, gather: bool = True, name: str | None = None) -> Plan:
    """Lower `graph` to kernels. `gather`: data rows are read through the epoch's
    index (training); otherwise contiguously from `off` (evaluate, predict)."""
    return _Planner(graph, config, gather, name or graph.name).run()


def plans_for(program, config: LaunchConfig = GPU_CONFIG) -> dict[str, Plan]:
    """The three graphs' plans: training reads data rows through the epoch's index,
    evaluation and prediction read them in order."""
    plans = {}
    for name in ("train", "evaluate", "predict"):
        graph = getattr(program, name)
        if graph is not None:
            plans[name] = plan_graph(graph, config, gather=(name == "train"), name=name)
    return plans
