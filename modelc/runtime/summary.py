"""The Keras-like summary of a program: each layer (its type), output shape, parameter count.

It needs no backend, so `modelc summary` shows a spec without compiling it for a target.
"""
from __future__ import annotations

import numpy as np

from modelc.compiler.layers import LAYERS


def count_params(program, role: str | None = None) -> int:
    """The program's weights, counted: all of them, or those of one role ("param": trained,
    "stat": updated but not trained, as batch normalization's moving statistics)."""
    return sum(int(np.prod(p.value.shape)) for p in program.params if role in (None, p.value.role))


def shape_text(value) -> str:
    """An output shape as Keras shows it, the batch as None: (None, 28, 28, 1)."""
    return "(None, " + ", ".join(str(d) for d in value.shape[1:]) + ")"


def layer_params(layer) -> int:
    """The weights a layer holds (trainable and moving statistics)."""
    return sum(int(np.prod(p.shape)) for p in layer.params)


def summarize(program) -> str:
    """The Keras-like summary table of a program (no backend needed)."""
    # A chain reads like Keras's Sequential summary; a graph gets "Connected to", as a functional model.
    previous = [program.input.name]
    chain = True
    for layer in program.layers:
        chain = chain and layer.inputs == previous
        previous = [layer.name]
    rows = [] if chain else [(f"{program.input.name} (InputLayer)", shape_text(program.input), "0", "-")]
    for layer in program.layers:
        kind = LAYERS[layer.kind].type
        row = (f"{layer.name} ({kind})", shape_text(layer.output), f"{layer_params(layer):,}")
        rows.append(row if chain else row + (", ".join(layer.inputs),))
    heads = ("Layer (type)", "Output Shape", "Param #") + (() if chain else ("Connected to",))
    widths = [max(low, len(h), *(len(r[i]) for r in rows)) + 3
              for i, (h, low) in enumerate(zip(heads, (25, 22, 8, 16)))]
    width = sum(widths)

    def line(cells):
        return " " + "".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    total, trained, fixed = count_params(program), count_params(program, "param"), count_params(program, "stat")
    out = [f'Model: "{program.name}"', "_" * width, line(heads), "=" * width]
    for i, row in enumerate(rows):
        out.append(line(row))
        if i < len(rows) - 1:
            out.append(" " + "-" * (width - 1))
    out += ["=" * width, f"Total params: {total:,} ({_bytes(total * 4)})",
            f"Trainable params: {trained:,} ({_bytes(trained * 4)})",
            f"Non-trainable params: {fixed:,} ({_bytes(fixed * 4)})", "_" * width]
    return "\n".join(out)


def _bytes(n: float) -> str:
    """A size as Keras prints it: 128.00 B, 215.04 KB."""
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"
