"""The `modelc` commands that carry models in and out: `from-keras`, `export` (ONNX) and `plot`,
and the training curves `train --plot` draws. Thin, like cli.py: the work is in
modelc.keras_import, the compiler's ONNX generator and modelc.plots."""
from __future__ import annotations

import os

from modelc.cli_common import load_model, load_program, note
from modelc.errors import ModelcError

CHECK_SAMPLES = 8        # the random inputs `export` runs through onnxruntime and modelc to compare
CHECK_TOLERANCE = 1e-5   # relative and absolute


def cmd_from_keras(args) -> int:
    from modelc.keras_import import convert
    from modelc.outputs import check_outputs
    weights = args.weights or os.path.splitext(args.spec)[0] + ".npz"
    check_outputs([("--spec", args.spec), ("--weights", weights)], [("the Keras file", args.keras)])
    conversion = convert(args.keras, name=args.name)
    conversion.write(args.spec, weights)
    for remark in conversion.notes:
        note(f"note: {remark}")
    print(f"wrote {args.spec} and {weights}")
    print(f"  try: modelc summary {args.spec}")
    return 0


def cmd_export(args) -> int:
    from modelc.outputs import check_outputs
    check_outputs([("--onnx", args.onnx)], [("the spec", args.spec), ("the weights file", args.weights)])
    model = load_model(args)
    model.load_weights(args.weights)
    opset = model.export_onnx(args.onnx, opset=args.opset)
    print(f"wrote {args.onnx} (ONNX opset {opset}; passes onnx.checker's full check)")
    if args.no_check:
        return 0
    from modelc.extras import missing
    if missing("onnx"):
        note("onnxruntime is not installed, so the file was not run; pip install 'modelc[onnx]' to check it")
        return 0
    worst = _compare_with_onnxruntime(model, args.onnx)
    if worst is None:
        return 0
    print(f"checked: onnxruntime gives modelc's predictions on {CHECK_SAMPLES} random inputs "
          f"(largest difference {worst:.2g})")
    return 0


def _compare_with_onnxruntime(model, path: str) -> float | None:
    """Run the exported file with onnxruntime and modelc on the same random inputs; the largest
    difference, or a ModelcError (a bug in the exporter) when they disagree."""
    import numpy as np
    import onnxruntime
    x = np.random.default_rng(0).standard_normal((CHECK_SAMPLES, *model.program.input.shape[1:]),
                                                  dtype=np.float32)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    want = model.predict(x)
    if got.shape != want.shape or not np.allclose(got, want, rtol=CHECK_TOLERANCE, atol=CHECK_TOLERANCE):
        difference = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
        raise ModelcError(f"{path}: onnxruntime's output differs from modelc's (shape {got.shape} vs "
                          f"{want.shape}, largest difference {difference:.3g}); this is a bug in modelc's "
                          "ONNX export, please report it", hint="--no-check writes the file without this check")
    return float(np.max(np.abs(got - want)))


def _is_history(path: str) -> bool:
    return path.lower().endswith((".json", ".csv"))


def cmd_plot(args) -> int:
    from modelc.outputs import check_outputs
    check_outputs([("-o", args.output)], [("the file drawn", args.source)])
    if _is_history(args.source):
        from modelc.plots import curves
        curves.require_matplotlib()
        recorded = curves.read_history(args.source)
        curves.draw(recorded.rows, args.output, title=recorded.title, test=recorded.test)
        print(f"wrote {args.output} (the curves of {len(recorded.rows)} epochs in {args.source})")
        return 0
    from modelc.plots import network
    print(f"wrote {args.output}: {network.draw(load_program(args.source), args.output)}")
    return 0


def check_plot_flag(args) -> None:
    """train --plot: matplotlib and the picture's format are checked before training starts,
    not after the last epoch."""
    if args.plot is not None:
        from modelc.plots import curves
        curves.check_format(args.plot)
        curves.require_matplotlib()


def draw_curves(args, model, test=None) -> None:
    """train --plot: the curves of the epochs done so far."""
    from modelc.plots import curves
    curves.draw(model.train_log, args.plot, title=curves.curve_title(model.name, model.target), test=test)


def register(add, target) -> None:
    """The parsers of these commands (cli.build_parser's `add` and `target` helpers)."""
    p = add("from-keras", cmd_from_keras, "convert a Keras 3 .keras model into a spec and a weights file")
    p.add_argument("keras", metavar="MODEL.keras")
    p.add_argument("--spec", required=True, metavar="OUT.model", help="the spec to write")
    p.add_argument("--weights", metavar="OUT.npz", help="the weights to write (default: the spec's name "
                   "with .npz)")
    p.add_argument("--name", help="the spec's model name (default: the Keras model's)")

    p = add("export", cmd_export, "write trained weights' inference graph as an ONNX model")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--weights", required=True, metavar="W.npz")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx")
    p.add_argument("--opset", type=int, help="the ONNX opset to write (default: modelc's; 13 at least)")
    p.add_argument("--no-check", action="store_true", help="do not run the file with onnxruntime to compare "
                   "it with modelc's predictions")
    target(p, default="numpy")
    p.add_argument("--quiet", "-q", action="store_true")

    p = add("plot", cmd_plot, "draw a spec's network (.dot, or .svg/.png/.pdf with Graphviz) or a "
            "history file's training curves (.png/.svg/.pdf, with matplotlib)")
    p.add_argument("source", metavar="SPEC|HISTORY", help="a .model spec, or a --history file (.json or .csv)")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
