"""What every `modelc` command file shares: the note on stderr, and building a spec's program
and model from the command line's arguments."""
from __future__ import annotations

import os
import sys
import time


def note(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"modelc: {message}", file=sys.stderr, flush=True)


def load_program(path: str):
    """Parse and build a spec file (every graph, every shape check)."""
    from modelc.compiler.build import build_program
    from modelc.grammar.parser import parse_file
    return build_program(parse_file(path))


def load_model(args, seed: int | None = None, program=None):
    """The model of `args.spec` on `args.target`, with `args.data` (when the command has it)."""
    from modelc.runtime.model import Model
    program = program or load_program(args.spec)
    start = time.perf_counter()
    model = Model(program, args.target, seed=seed, data_dir=getattr(args, "data", None),
                  base_dir=os.path.dirname(os.path.abspath(args.spec)))
    note(f"{program.name} on {args.target}: {model.count_params():,} parameters, ready in "
         f"{time.perf_counter() - start:.2f}s", getattr(args, "quiet", False))
    return model
