"""The epoch kernel of the `cuda` target: a plan's kernels inlined in one persistent
cooperative kernel per call, instead of one launch per kernel per batch (pure Python,
never imports numba).

A launch costs the host several microseconds plus a few per array argument, and a
training step of a small network is a handful of dependent kernels of a few
microseconds each: launched one by one the step is host-bound. The epoch kernel
(`EPOCH_NAME`) takes every array once and loops over the call's batches itself:

    for s in range(s0, s1):               # the batches of this call
        off, nb, step = ...               # from s: no host work per step
        q0 = tab[(s - s0) * W + 0]        # per-step scalars (step sizes) from a device table
        for v in range(blockIdx.x, blocks(k00, nb), gridDim.x):   # k00's blocks, strided
            bx_k0, by_k0, ... = ...(v)    # the block this block plays
            <k00's body, its names suffixed _k0>
            syncthreads()                 # its shared tiles are free again
        grid.sync()                       # only where the next kernel depends on this one

The kernels' bodies are the same source as their standalone launches (they read their
block and thread through `bx by bz tx ty`, `cuda_emit.INDEX`), inlined with their
names renamed (`_unit`), so the two ways of running a plan compute the same thing;
their shared tiles come from one pool (`SharedPool`). A grid-wide barrier stands
between two kernels only where the second reads or writes a buffer that an
unsynchronised kernel before it wrote, or writes one that it read (the plan's
`reads`/`writes`); a classifier's softmax and loss rows run in the blocks of the
product before them, which hold whole rows (`schedule`, `_joins`).

Arguments: a launch passes at most 4 KB and an array takes 56 bytes, so the epoch
kernel does not take the arrays one by one. Every parameter, statistic and optimizer
state array is a view of one weights arena (the backend's), every buffer a view of
its graph's arena (one per dtype, `arena_of`), and the kernel takes the arenas and a
table `sp` of where each array starts and ends: a kernel's section binds `ar[sp[a]:sp[b]]`.
Any model's epoch kernel takes at most 15 arguments.

`epoch_for(plan)` returns the `Epoch`, or the reason it cannot run this way: the
kernels' blocks must all have the same number of threads (the epoch kernel's block).
The backend then launches the kernels one by one as before (`cuda.DeviceGraph`).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass

from modelc.compiler.codegen.cuda_emit import index_lines
from modelc.compiler.codegen.cuda_plan import PARAM_BYTES, KParam, Kernel, Plan, indent, param_bytes, size_of
from modelc.compiler.ir import I64

EPOCH_NAME = "epoch"
_PER_STEP = ("off", "nb", "step")          # computed in the kernel from the batch number
# the epoch kernel's own scalars: batches [s0, s1) of `batch` rows out of `n`, the update number of s0
_HEAD = [KParam("s0", "i64", "s0"), KParam("s1", "i64", "s1"), KParam("batch", "i64", "batch"),
         KParam("n", "i64", "n"), KParam("step0", "i64", "step0")]


@dataclass
class Epoch:
    """A plan's epoch kernel: its source (appended to the plan's module), its parameters
    (sources as in `KParam`, plus "s0" "s1" "batch" "n" "step0"; "tab", the per-step table;
    "spans", where each array lies in its arena; ("arena", "weights"|"f32"|"i64"), the arenas;
    ("out",), predict's output), the arrays of `spans` in order, the table's columns per
    step-scalar group, its block's threads and the grid-wide barriers per batch."""
    source: str
    params: list[KParam]
    arrays: list[tuple]                     # ("value", base id) of spans[2j], spans[2j + 1]
    columns: dict[int, tuple[int, int]]     # step-scalar group -> (first column, count)
    width: int                              # float32 columns of the per-step table
    threads: int
    barriers: int

    def param_bytes(self) -> int:
        return param_bytes(self.params)

    def blocks_needed(self, kernels: list[Kernel], nb: int) -> int:
        """The most blocks any one kernel of a batch of nb rows has: more would idle."""
        return max(size_of(k.grid_dims(nb)) for k in kernels)


def arena_of(plan: Plan, vid: int) -> str:
    """Which arena holds value `vid`: the weights' (parameters, statistics, optimizer state:
    the backend's, shared by every graph), or the graph's own buffers, by dtype."""
    buf = plan.buffers.get(vid)
    return "weights" if buf is None else ("i64" if buf.dtype == I64 else "f32")


def _threads(k: Kernel) -> int:
    return size_of(k.block)


def _unit(unit: list[Kernel], tags: list[str], names: dict, pool: SharedPool) -> list[str]:
    """Kernels run one after the other by the same blocks (one kernel, or a matmul and the row
    kernel that joins it, `_joins`): their arrays bound as views once, then, for each block of
    the first that this block takes (v strided by the grid), each kernel's body for its block v,
    a block barrier after each so the shared tiles are free again and a joined kernel sees the
    rows its block wrote. A body is the kernel's own source with its block and thread, its
    parameters and its locals renamed (`_Rename`): a device function would do the same, but
    numba compiles device functions only where a GPU is present, and PTX is checked without."""
    head, loop = [], []
    for k, tag in zip(unit, tags):
        assert len(k.block) <= 2, "internal: a kernel with a 3-D block"
        bx, by = k.block[0], (k.block[1] if len(k.block) > 1 else 1)
        g = [f"g{i}_{tag}" for i in range(3)]
        dims = [e.source("nb") for e in k.grid] + ["1"] * (3 - len(k.grid))
        head += [f"# {k.name}: {k.kind}", f"{', '.join(g)} = {', '.join(dims)}"]
        rename = {"bx": f"bx_{tag}", "by": f"by_{tag}", "bz": f"bz_{tag}", "tx": f"tx_{tag}", "ty": f"ty_{tag}"}
        for p in k.params:
            src = p.source
            if src in _PER_STEP:
                rename[p.name] = src
            elif isinstance(src, tuple) and src[0] == "opt":
                rename[p.name] = f"q{src[1]}_{src[2]}"
            elif isinstance(src, tuple) and src[0] == "value":
                rename[p.name] = f"{p.name}_{tag}"
                head.append(f"{p.name}_{tag} = {names[src]}")
            else:
                rename[p.name] = names[src]
        loop += [f"bx_{tag} = v % {g[0]}", f"by_{tag} = (v // {g[0]}) % {g[1]}", f"bz_{tag} = v // ({g[0]} * {g[1]})",
                 f"tx_{tag} = t % {bx}" if by > 1 else f"tx_{tag} = t", f"ty_{tag} = t // {bx}" if by > 1 else f"ty_{tag} = 0"]
        loop += _Rename(rename, tag, pool).apply(index_lines(k.body, k.block, device=True) + k.body)
        loop.append("cuda.syncthreads()")
    first = [f"g{i}_{tags[0]}" for i in range(3)]
    return head + [f"for v in range(cuda.blockIdx.x, {' * '.join(first)}, cuda.gridDim.x):"] + indent(loop)


def _joins(a: Kernel, b: Kernel) -> bool:
    """Whether row kernel b can run in matmul a's blocks: a's T x T block computes T whole rows
    of its output (one tile across, rows tiled down the batch: `m0 = by * T`), and b's block
    is the same T rows with T lanes, so b's block v reads only what a's block v wrote (the
    softmax and loss rows of a classifier with at most T classes, after its last product)."""
    if a.kind != "matmul" or b.kind != "rows" or a.block != b.block or len(a.block) != 2 or len(a.grid) != 2:
        return False
    T = a.block[0]
    across, down = a.grid
    return (across.per_batch == 0 and across.blocks(0) == 1 and (down.per_batch, down.fixed, down.div) == (1, 0, T)
            and len(b.grid) == 1 and (b.grid[0].per_batch, b.grid[0].fixed, b.grid[0].div) == (1, 0, T))


class SharedPool:
    """The epoch kernel's shared arrays: numba allocates one per `cuda.shared.array` call, so
    the kernels' tiles are declared once at the top, and kernels inlined one after the other
    reuse the same ones (a block barrier separates them). `take(call)` gives the next array of
    that shape and dtype for one kernel; `declarations()` are the lines that allocate them."""

    def __init__(self):
        self.names: dict[str, list[str]] = {}
        self.count = 0

    def start(self):
        self.used: dict[str, int] = {}

    def take(self, call: str) -> str:
        names = self.names.setdefault(call, [])
        i = self.used.get(call, 0)
        self.used[call] = i + 1
        if i == len(names):
            names.append(f"sh{self.count}")
            self.count += 1
        return names[i]

    def declarations(self) -> list[str]:
        return [f"{name} = {call}" for call, names in self.names.items() for name in names]


def _shared_call(node) -> str | None:
    """The source of `cuda.shared.array(...)` if `node` assigns one to a name."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        text = ast.unparse(node.value)
        if text.startswith("cuda.shared.array("):
            return text
    return None


class _Rename(ast.NodeTransformer):
    """A kernel body with the names in `names` replaced, its shared arrays taken from the pool
    (their allocations removed) and every other name it assigns suffixed with `_tag`, so kernels
    inlined side by side keep their own variables (and numba their types)."""

    def __init__(self, names: dict[str, str], tag: str, pool: SharedPool):
        self.names, self.tag, self.pool = names, tag, pool

    def apply(self, lines: list[str]) -> list[str]:
        tree = ast.parse("\n".join(lines))
        self.pool.start()
        shared = {n.targets[0].id: self.pool.take(call) for n in ast.walk(tree) if (call := _shared_call(n))}
        assigned = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        clash = assigned & set(self.names)
        assert not clash, f"internal: a kernel body assigns its parameters or indices {sorted(clash)}"
        assert not any(isinstance(n, ast.Return) for n in ast.walk(tree)), "internal: a kernel body returns"
        self.names = {**{n: f"{n}_{self.tag}" for n in assigned}, **shared, **self.names}
        return ast.unparse(self.visit(tree)).splitlines()

    def visit_Assign(self, node: ast.Assign):
        if _shared_call(node):
            return None
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name):
        if node.id in self.names:
            return ast.copy_location(ast.Name(self.names[node.id], node.ctx), node)
        return node


def schedule(kernels: list[Kernel]) -> list[list[list[Kernel]]]:
    """The kernels in runs between grid-wide barriers, a run a list of units (`_unit`). A kernel
    starts a new run when it reads or writes what a kernel of the current run wrote, or writes
    what one read; a row kernel joins the matmul before it (`_joins`) when that is the only
    kernel of the run it depends on."""
    runs: list[list[list[Kernel]]] = []

    def conflicts(k: Kernel, a: Kernel) -> bool:
        return bool(k.reads & a.writes or k.writes & a.writes or k.writes & a.reads)
    for k in kernels:
        run = runs[-1] if runs else []
        last = run[-1] if run else []
        others = [a for unit in run for a in unit if a is not last[-1]] if run else []
        if len(last) == 1 and _joins(last[0], k) and not any(conflicts(k, a) for a in others):
            last.append(k)
        elif run and not any(conflicts(k, a) for unit in run for a in unit):
            run.append([k])
        else:
            runs.append([[k]])
    return runs


def prediction_output(plan: Plan) -> tuple[int, int] | None:
    """(buffer id, floats per row) of a predict plan's prediction, which is copied into the
    output array after each batch."""
    kind, vid = plan.outputs.get("prediction", (None, None))
    return (vid, plan.buffers[vid].per_row) if kind == "buffer" else None


def epoch_for(plan: Plan) -> Epoch | str:
    """The epoch kernel of `plan`, or why it has none."""
    kernels, output = plan.kernels, prediction_output(plan)
    threads = {_threads(k) for k in kernels}
    if len(threads) != 1:
        return f"its kernels' blocks differ in size ({sorted(threads)} threads)"
    T = threads.pop()
    # every array is a view of an arena: one argument per arena, and a table of where each lies
    direct, arrays, names, at = list(_HEAD), [], {}, {}
    arenas: dict[str, KParam] = {}
    columns: dict[int, tuple[int, int]] = {}
    for k in kernels:
        for p in k.params:
            src = p.source
            if isinstance(src, tuple) and src[0] == "opt":
                columns[src[1]] = (0, max(columns.get(src[1], (0, 0))[1], src[2] + 1))
            elif src in _PER_STEP or src in names:
                continue
            elif isinstance(src, tuple) and src[0] == "value":
                kind = arena_of(plan, src[1])
                arena = arenas.setdefault(kind, KParam(f"ar_{kind}", "i64[]" if kind == "i64" else "f32[]",
                                                        ("arena", kind)))
                j = len(arrays)
                arrays.append(src)
                at[src] = (arena.name, f"sp[{2 * j}]")        # its arena, and where it starts there
                names[src] = f"{arena.name}[sp[{2 * j}]:sp[{2 * j + 1}]]"
            else:
                names[src] = f"a{len(direct)}"
                direct.append(KParam(names[src], p.type, src))
    width = 0
    for gi in sorted(columns):
        columns[gi] = (width, columns[gi][1])
        width += columns[gi][1]
    params = direct + list(arenas.values()) + ([KParam("sp", "i64[]", "spans")] if arrays else [])
    params += [KParam("tab", "f32[]", "tab")] if width else []
    params += [KParam("out", "f32[]", ("out",))] if output is not None else []
    nbytes = param_bytes(params)
    assert nbytes <= PARAM_BYTES, f"internal: the epoch kernel takes {nbytes} bytes of arguments"

    body = ["grid = cuda.cg.this_grid()", "t = cuda.threadIdx.x", "for s in range(s0, s1):",
            "    off = s * batch", "    nb = min(batch, n - off)", "    step = step0 + s - s0"]
    for gi, (first, count) in sorted(columns.items()):
        body += [f"    q{gi}_{j} = tab[(s - s0) * {width} + {first + j}]" for j in range(count)]
    runs, pool, sections, n = schedule(kernels), SharedPool(), [], 0
    for r, run in enumerate(runs):
        sections += indent(["grid.sync()"] if r else [])
        for unit in run:
            sections += indent(_unit(unit, [f"k{n + i}" for i in range(len(unit))], names, pool))
            n += len(unit)
    body = body[:2] + pool.declarations() + body[2:] + sections
    if output is not None:
        vid, per = output
        arena, start = at[("value", vid)]
        body += indent(["grid.sync()", f"for i in range(cuda.grid(1), nb * {per}, cuda.gridsize(1)):",
                        f"    out[off * {per} + i] = {arena}[{start} + i]"])
    body.append("    grid.sync()")      # the next batch's first kernel overwrites this one's buffers
    barriers = len(runs) + (output is not None)
    lines = [f"def {EPOCH_NAME}({', '.join(p.name for p in params)}):",
             f'    """{len(kernels)} kernels per batch, {barriers} grid barriers; one call runs '
             f'batches s0..s1-1"""'] + indent(body)
    return Epoch("\n".join(lines) + "\n", params, arrays, columns, width, T, barriers)
