"""The network as a graph, as `keras.utils.plot_model` draws it: one box per layer (its name,
its Keras type, its output shape, its parameter count), an arrow for every input it reads,
top to bottom. modelc writes the DOT text itself; Graphviz's `dot` renders the pictures.
"""
from __future__ import annotations

import html
import os
import shutil
import subprocess

from modelc.compiler.layers import LAYERS
from modelc.errors import ModelcError
from modelc.files import atomic_write
from modelc.runtime.summary import layer_params, shape_text

WRITTEN = (".dot", ".gv")                                   # modelc writes these itself
RENDERED = {".svg": "svg", ".png": "png", ".pdf": "pdf"}     # Graphviz's `dot -T<format>` draws these
RENDER_SECONDS = 60
INSTALL = "apt install graphviz (Debian, Ubuntu), brew install graphviz (macOS), or conda install graphviz"

_HEAD = "#dbe7f5"       # the name row's colour; the input's is _INPUT
_INPUT = "#e3f1de"


def _quoted(name: str) -> str:
    """A DOT identifier: a double-quoted string, its quotes and backslashes escaped."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _box(name: str, kind: str, shape: str, params: int | None, colour: str) -> str:
    """An HTML-like label: `name (Kind)` on a coloured row, then the shape and the parameters."""
    def cell(text: str, extra: str = "") -> str:
        return f'<tr><td{extra}>{text}</td></tr>'

    rows = [cell(f"<b>{html.escape(name)}</b> ({html.escape(kind)})", f' bgcolor="{colour}"'),
            cell(f"Output shape: {html.escape(shape)}")]
    if params:
        rows.append(cell(f"Params: {params:,}"))
    return '<<table border="0" cellborder="1" cellspacing="0" cellpadding="5">' + "".join(rows) + "</table>>"


def to_dot(program) -> str:
    """The DOT text of a program's network: a node for the input and one per layer (in the
    program's order), an edge from every layer or input a layer reads (a join has several)."""
    nodes = [(program.input.name, _box(program.input.name, "InputLayer", shape_text(program.input), None, _INPUT))]
    edges = []
    for layer in program.layers:
        nodes.append((layer.name, _box(layer.name, LAYERS[layer.kind].type, shape_text(layer.output),
                                       layer_params(layer), _HEAD)))
        edges += [(source, layer.name) for source in layer.inputs]
    lines = [f"digraph {_quoted(program.name)} {{",
             f"  graph [rankdir=TB, label=<<b>{html.escape(program.name)}</b>>, labelloc=t, fontname=Helvetica,"
             " fontsize=16, nodesep=0.4, ranksep=0.35, dpi=96];",
             '  node [shape=plaintext, fontname=Helvetica, fontsize=12, margin=0];',
             '  edge [color="#555555", arrowsize=0.8];']
    lines += [f"  {_quoted(name)} [label={label}];" for name, label in nodes]
    lines += [f"  {_quoted(a)} -> {_quoted(b)};" for a, b in edges]
    return "\n".join(lines + ["}"]) + "\n"


def draw(program, path) -> str:
    """Write the network picture to `path`, in the format its extension names: .dot or .gv
    (the DOT text) without anything else, .svg, .png or .pdf through Graphviz's `dot`.
    Returns what was written, in a few words."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in WRITTEN and ext not in RENDERED:
        raise ModelcError(f"cannot draw the network as '{path}': unknown extension '{ext or '(none)'}'",
                          hint="use one of " + ", ".join(WRITTEN + tuple(RENDERED)))
    text = to_dot(program)
    what = f"the network of '{program.name}' ({len(program.layers)} layers)"
    if ext in WRITTEN:
        atomic_write(path, text.encode())
        return f"{what} as DOT"
    fmt = RENDERED[ext]
    atomic_write(path, _render(text, fmt, path))
    return f"{what} as {fmt.upper()}, drawn by Graphviz"


def _render(text: str, fmt: str, path) -> bytes:
    """The picture Graphviz's `dot` draws from DOT text, as bytes (written by the caller)."""
    exe = shutil.which("dot")
    if exe is None:
        raise ModelcError(f"drawing '{path}' ({fmt.upper()}) needs Graphviz's `dot`, which is not on PATH",
                          hint=f"install Graphviz: {INSTALL}; or write the DOT text (-o network.dot), "
                               "which needs nothing else")
    try:
        done = subprocess.run([exe, f"-T{fmt}"], input=text.encode(), capture_output=True,
                              timeout=RENDER_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise ModelcError(f"Graphviz's `dot` took more than {RENDER_SECONDS}s drawing '{path}'",
                          hint="write the DOT text instead (-o network.dot) and render it yourself") from None
    except OSError as e:
        raise ModelcError(f"cannot run Graphviz's `dot` ({exe}): {e.strerror or e}", hint=f"reinstall it: {INSTALL}") from None
    if done.returncode != 0 or not done.stdout:
        said = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}, no output"
        raise ModelcError(f"Graphviz's `dot -T{fmt}` failed drawing '{path}': {said}",
                          hint="write the DOT text (-o network.dot) to see what was given to it")
    return done.stdout
