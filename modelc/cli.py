"""The `modelc` command: a thin layer over the compiler and the runtime.

Results go to stdout, notes and errors to stderr. Exit codes: 0 success;
1 an expectation or a verification failed, or training diverged (the run
itself worked, and what it finished was kept); 2 a user mistake (a SpecError or
ModelcError, printed without a traceback; argparse's usage errors are 2 as
well); 3 an internal error, a bug in modelc (the traceback goes to a file,
named in the message); 130 interrupted (Ctrl-C or SIGTERM), with nothing
half-written and the last finished epoch kept.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from modelc.cli_common import load_model, load_program, note
from modelc.cli_models import check_plot_flag, draw_curves, register
from modelc.cli_ranks import add_flag, run_as_rank, say, start_job
from modelc.errors import ModelcError

EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

_written: list[str] = []     # files this run has finished writing, for the Ctrl-C message


def _whole(minimum: int):
    """An argparse type: a whole number of at least `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


_positive = _whole(1)
_non_negative = _whole(0)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _print_results(label: str, results: dict[str, float]) -> None:
    from modelc.runtime.progress import format_value
    for key, value in results.items():
        print(f"{label}{key}: {format_value(value)}")


# ---------------------------------------------------------------- commands

def cmd_check(args) -> int:
    from modelc.runtime import training
    from modelc.runtime.summary import count_params
    failed = 0
    for path in args.specs:
        try:
            program = load_program(path)
            training.check_static(program, training.settings(program.spec))
        except ModelcError as err:
            print(str(err), file=sys.stderr)
            failed += 1
            continue
        print(f"ok: {path} ({program.name}, {count_params(program):,} parameters)")
    return EXIT_USER_ERROR if failed else EXIT_OK


def cmd_summary(args) -> int:
    from modelc.runtime.summary import summarize
    print(summarize(load_program(args.spec)))
    return EXIT_OK


def cmd_ir(args) -> int:
    from modelc.compiler.ir import format_graph
    program = load_program(args.spec)
    if args.train or args.eval:
        graph = program.train if args.train else program.evaluate
        if graph is None:
            raise ModelcError(f"'{program.name}' has no loss, so it has no "
                              f"{'training' if args.train else 'evaluation'} graph",
                              hint="add a target and a loss to the spec")
    else:
        graph = program.predict
    print(format_graph(graph))
    return EXIT_OK


def _data_files(model) -> list[tuple[str, str]]:
    """The files the spec's data source reads (its `path` and `test` options), as inputs to protect."""
    bound = model.settings.data
    if bound is None:
        return []
    from modelc.files import spec_relative
    return [(f"the data file of {bound}", str(spec_relative(bound.options[key], model.base_dir)))
            for key in ("path", "test") if isinstance(bound.options.get(key), str)]


def _check_train_outputs(args, model) -> None:
    """Every file `train` will write, checked before training starts (see modelc.outputs)."""
    from modelc.outputs import check_folder, check_outputs
    from modelc.runtime.training import output_paths
    inputs = [("the spec", args.spec)] + _data_files(model)
    outputs = [(flag, path) for flag, path in (("--out", args.out), ("--history", args.history),
                                               ("--plot", args.plot)) if path is not None]
    spec_outputs = output_paths(model.settings, model.base_dir)
    folders = [(what, path) for what, path in spec_outputs if what.startswith("checkpoint(")]
    outputs += [(what, path) for what, path in spec_outputs if not what.startswith("checkpoint(")]
    if args.resume:     # read whole before training; only the checkpoint folder may write it again
        check_outputs(list(outputs), [("the checkpoint being resumed", args.resume)])
    if args.checkpoint is not None:
        folders = [("--checkpoint", args.checkpoint)]
    for flag, folder in folders:
        check_folder(flag, folder, inputs)
        outputs += [(f"{flag} {folder}", os.path.join(folder, name)) for name in ("last.npz", "best.npz")]
    check_outputs(outputs, inputs)


def _interrupted_path(args, model) -> str:
    """Where an interrupted run keeps its last finished epoch: the checkpoint folder's last.npz,
    else beside --out, else in the current folder."""
    if args.checkpoint:
        return os.path.join(args.checkpoint, "last.npz")
    if args.out:
        stem = args.out[:-len(".npz")] if args.out.endswith(".npz") else args.out
        return stem + ".interrupted.npz"
    return f"{model.name}.interrupted.npz"


def _save_interrupted(args, model) -> None:
    """Ctrl-C or SIGTERM: keep the last finished epoch as a checkpoint and say how to resume."""
    import signal
    if model.epochs_done == 0 and not args.resume:
        print("\nmodelc: interrupted before the first epoch finished; nothing to keep", file=sys.stderr)
        return
    path = _interrupted_path(args, model)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)      # a second Ctrl-C must not cut the save
    try:
        model.save(path)
        if args.history:
            _history_writer(args)(model, interrupted=True)
        if args.plot:
            draw_curves(args, model)
    finally:
        signal.signal(signal.SIGINT, previous)
    _written.append(path)
    print(f"\nmodelc: interrupted; epoch {model.epochs_done} was the last to finish, saved to {path}\n"
          f"  resume with: modelc train {args.spec} --resume {path}"
          + (f" --target {args.target}" if args.target != "cpu" else "")
          + (f" --ranks {args.ranks}" if getattr(args, "ranks", None) else ""), file=sys.stderr)


def _history_writer(args):
    """The `--history` file, rewritten after every epoch, so a stopped run leaves its curve behind."""
    from modelc.runtime.progress import History, write_history

    def write(model, _epoch=None, _logs=None, **extra):
        write_history(args.history, History(model.train_log), model=model.name, target=model.target, **extra)
    return write


def _write_outputs(args, model, result) -> None:
    if args.out:
        model.save(args.out)
        _written.append(args.out)
        note(f"wrote weights to {args.out}", args.quiet)
    if args.history:
        extra = {}
        if result.test is not None:
            extra["test"] = result.test
        if result.history.diverged is not None:
            extra["diverged"] = str(result.history.diverged)
        _history_writer(args)(model, **extra)
        _written.append(args.history)
        note(f"wrote history to {args.history}", args.quiet)
    if args.plot and model.train_log:
        draw_curves(args, model, test=result.test)
        _written.append(args.plot)
        note(f"drew the training curves in {args.plot}", args.quiet)


def cmd_train(args) -> int:
    from modelc.runtime import training
    code = start_job(args)
    if code is not None:
        return code
    model = load_model(args, seed=None if args.resume else args.seed)
    training.check_static(model.program, model.settings)
    if args.monitor is not None:
        logged = training.logged_names(model.program.shown_names, model.settings)
        if args.checkpoint is None:
            raise ModelcError("--monitor chooses best.npz, so it goes with --checkpoint DIR")
        if args.monitor not in logged:
            raise ModelcError(f"--monitor {args.monitor}: this run does not log it",
                              hint=f"it logs: {', '.join(logged)}")
    _check_train_outputs(args, model)
    check_plot_flag(args)
    initial_epoch = 0
    if args.resume:
        model.load_weights(args.resume)
        initial_epoch = model.epochs_done
        if args.seed is not None and args.seed != model.shuffle_seed:
            raise ModelcError(f"--seed {args.seed}, but {args.resume} was trained with seed {model.shuffle_seed}",
                              hint="leave --seed out when resuming")
        epochs = args.epochs or model.settings.epochs
        if model.stop_training:
            note(f"{args.resume} stopped early after epoch {initial_epoch}; there is nothing to resume", args.quiet)
            initial_epoch = epochs = max(initial_epoch, 1)
        elif initial_epoch >= epochs:
            note(f"{args.resume} has already trained {initial_epoch} of {epochs} epochs", args.quiet)
            epochs = initial_epoch
        else:
            note(f"resuming from {args.resume}: epoch {initial_epoch + 1} of {epochs}", args.quiet)
        args.epochs = epochs
    try:
        result = model.train_from_spec(args.data, epochs=args.epochs, batch_size=args.batch,
                                       verbose=0 if args.quiet else 1, quiet_data=args.quiet,
                                       initial_epoch=initial_epoch, checkpoint_dir=args.checkpoint,
                                       monitor=args.monitor,
                                       after_epoch=[_history_writer(args)] if args.history else [])
    except KeyboardInterrupt:
        _save_interrupted(args, model)
        return EXIT_INTERRUPTED
    diverged = result.history.diverged
    if diverged is not None:
        print(f"modelc: error: {diverged}\n  hint: {_divergence_hint(model)}", file=sys.stderr)
        _write_outputs(args, model, result)
        return EXIT_FAILED
    for label, results in (("test.", result.test), ("val.", result.val), ("train.", result.train)):
        if results is not None:
            _print_results(label, results)
            break
    _write_outputs(args, model, result)
    outcomes = model.check_expectations(result)
    for outcome in outcomes:
        print(outcome)
    failed = [o for o in outcomes if not o.passed]
    if failed:
        print(f"modelc: {len(failed)} of {len(outcomes)} expectation(s) failed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _divergence_hint(model) -> str:
    lr = model.program.optimizer_options.get("lr")
    now = f" ({model.program.optimizer} has lr={lr:g})" if lr is not None else ""
    return (f"lower the learning rate{now}, clip the gradients with clipnorm=1.0 in the optimizer, "
            "check the scale of the data (e.g. mnist(scale=1/255)), or look for an extreme option "
            "(such as a tiny softmax temperature)")


def _evaluation_split(model, splits):
    """The data `eval` measures: the test split, else the spec's validation part, else the training data."""
    from modelc.runtime.model import split_last
    source = str(model.settings.data)
    if splits.test is not None:
        return splits.test.x, splits.test.y, f"the test split of {source}"
    x, y = splits.train.x, splits.train.y
    fraction = model.settings.validate
    if isinstance(fraction, float):
        _, _, (x, y) = split_last(x, y, fraction, f"validate split({fraction:g})")
        return x, y, f"the validation part of {source} (last {fraction:g})"
    return x, y, f"the training data of {source} (it has no test split)"


def cmd_eval(args) -> int:
    model = load_model(args)
    model.load_weights(args.weights)
    splits = model.load_splits(args.data, quiet=args.quiet)
    x, y, what = _evaluation_split(model, splits)
    results = model.evaluate(x, y, batch_size=args.batch, return_dict=True)
    note(f"evaluated on {what} ({len(x):,} samples)", args.quiet)
    _print_results("", results)
    return EXIT_OK


def _load_npy(path: str):
    import numpy as np
    p = Path(path)
    if not p.is_file():
        raise ModelcError(f"input file '{path}' not found" if not p.exists() else f"'{path}' is not a file")
    try:
        array = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ModelcError(f"cannot read '{path}' as a NumPy .npy array ({e})",
                          hint="save the features with numpy.save('x.npy', x)") from None
    if not isinstance(array, np.ndarray):
        raise ModelcError(f"'{path}' is an .npz archive; give one .npy array",
                          hint="save the features with numpy.save('x.npy', x)")
    return array


def cmd_predict(args) -> int:
    import numpy as np
    from modelc.files import atomic_write
    if args.output is not None:
        from modelc.outputs import check_outputs
        check_outputs([("--output", args.output)], [("the spec", args.spec), ("the weights file", args.weights),
                                                    ("the input file", args.input)])
    model = load_model(args)
    model.load_weights(args.weights)
    x = _load_npy(args.input)
    if tuple(x.shape) == tuple(model.program.input.shape[1:]):
        x = x[None]       # one sample without its batch axis
    predictions = model.predict(x, batch_size=args.batch)
    if args.output:
        atomic_write(args.output, lambda f: np.save(f, predictions))
        _written.append(args.output)
        print(f"wrote predictions {predictions.shape} to {args.output}")
        return EXIT_OK
    print(f"samples: {len(predictions)}")
    print(f"output: shape {predictions.shape}, float32")
    shown = 20
    target = model.program.target
    classify = (target is not None and target.format in ("sparse", "onehot")) or (
        predictions.ndim == 2 and predictions.shape[1] > 1)
    if classify and predictions.ndim == 2 and predictions.shape[1] > 1:
        classes = predictions.argmax(axis=1)
        confidence = predictions.max(axis=1)
        print("class:      " + " ".join(str(c) for c in classes[:shown]) + (" ..." if len(classes) > shown else ""))
        print("confidence: " + " ".join(f"{c:.2f}" for c in confidence[:shown])
              + (" ..." if len(classes) > shown else ""))
    else:
        flat = predictions.reshape(len(predictions), -1)
        for row in flat[:shown]:
            print(" ".join(f"{v:.4g}" for v in row[:8]) + (" ..." if flat.shape[1] > 8 else ""))
        if len(flat) > shown:
            print(f"... ({len(flat) - shown} more; use --output FILE.npy for all)")
    return EXIT_OK


def cmd_verify(args) -> int:
    from modelc.runtime import verify as checks
    code = start_job(args)
    if code is not None:
        return code
    if args.ranks is not None:
        from modelc.runtime.verify_ranks import verify_ranks
        report = verify_ranks(load_program(args.spec), args.targets or "cpu", steps=args.steps,
                              batch=args.batch, seed=args.seed, rtol=args.tolerance or checks.RANKS_RTOL,
                              data_dir=args.data, quiet=args.quiet,
                              base_dir=os.path.dirname(os.path.abspath(args.spec)))
        if report is not None:      # rank 0's
            print(report.text())
        return EXIT_OK if report is None or report.passed else EXIT_FAILED
    targets = [t.strip() for t in (args.targets or "numpy,cpu").split(",") if t.strip()]
    report = checks.verify(load_program(args.spec), targets, steps=args.steps, batch=args.batch, seed=args.seed,
                    rtol=args.tolerance or checks.RTOL, data_dir=args.data, quiet=args.quiet,
                    base_dir=os.path.dirname(os.path.abspath(args.spec)))
    print(report.text())
    return EXIT_OK if report.passed else EXIT_FAILED


def cmd_compile(args) -> int:
    program = load_program(args.spec)
    if args.emit_ptx:
        if args.target != "cuda":
            raise ModelcError("--emit-ptx needs --target cuda")
        try:
            from modelc.compiler.codegen.cuda_ptx import emit_ptx
        except ModuleNotFoundError as e:
            raise ModelcError(f"PTX generation needs the Python package '{e.name}'",
                              hint="pip install 'modelc[cuda]'") from None
        Path(args.emit_ptx).mkdir(parents=True, exist_ok=True)
        paths = emit_ptx(program, args.emit_ptx, args.arch or "sm_90")
        for path in paths:
            print(path)
        return EXIT_OK
    if args.arch:
        raise ModelcError("--arch goes with --emit-ptx DIR")
    if args.target == "cuda":
        from modelc.compiler.codegen.cuda_env import cuda_available
        from modelc.compiler.codegen.cuda_epoch import epoch_for
        from modelc.compiler.codegen.cuda_plan import plans_text
        from modelc.compiler.codegen.cuda_planner import plans_for
        from modelc.runtime.training import settings
        weights = sum(p.value.sample_size() for p in program.params) + sum(v.sample_size() for v in program.state)
        plans = plans_for(program)
        epochs = {name: epoch_for(plan) for name, plan in plans.items()}
        print(plans_text(plans, weights, settings(program.spec).batch, epochs))
        ok, reason = cuda_available()
        if not ok:
            note(f"no GPU here ({reason.rstrip('.')}), so planned only: the kernels compile on a GPU's "
                 "first use, and --emit-ptx DIR compiles them to PTX here")
            return EXIT_OK
    model = load_model(args, program=program)
    seconds = model.warm_up()
    print(f"ok: {args.spec} compiled for {args.target} in {seconds:.2f}s")
    return EXIT_OK


def cmd_doctor(args) -> int:
    from modelc.doctor import report
    print(report())
    return EXIT_OK


# ---------------------------------------------------------------- argument parsing

def build_parser() -> argparse.ArgumentParser:
    from modelc import __version__
    from modelc.runtime import verify
    parser = argparse.ArgumentParser(
        prog="modelc", description="Compile, train and check neural networks written as .model specs.",
        epilog="exit codes: 0 ok, 1 an expectation or verification failed or training diverged, "
               "2 a mistake in a spec, a flag or a file, 3 a bug in modelc, 130 interrupted")
    parser.add_argument("--version", action="version", version=f"modelc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    def target(p, default="cpu"):
        p.add_argument("--target", choices=("cpu", "numpy", "cuda"), default=default,
                       help=f"where to run (default: {default})")

    def data(p):
        p.add_argument("--data", metavar="DIR", default=None,
                       help="folder holding the data (e.g. DIR/mnist); default: $MODELC_DATA, the cache")

    p = add("check", cmd_check, "parse and check specs, build every graph; read no data")
    p.add_argument("specs", nargs="+", metavar="SPEC")

    p = add("summary", cmd_summary, "print a Keras-like summary of a spec's network")
    p.add_argument("spec", metavar="SPEC")

    p = add("ir", cmd_ir, "print a spec's IR (the prediction graph by default)")
    p.add_argument("spec", metavar="SPEC")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--train", action="store_true", help="the training graph: forward, backward, update")
    which.add_argument("--eval", action="store_true", help="the evaluation graph: forward, loss, metrics")

    p = add("train", cmd_train, "train a spec as its train section says, then check its expectations")
    p.add_argument("spec", metavar="SPEC")
    target(p)
    p.add_argument("--epochs", type=_positive, help="override the spec's epochs")
    p.add_argument("--batch", type=_positive, help="override the spec's batch size")
    p.add_argument("--seed", type=_non_negative, help="override the spec's seed")
    data(p)
    p.add_argument("--out", metavar="WEIGHTS.npz", help="write the trained weights here")
    p.add_argument("--history", metavar="FILE", help="write the per-epoch history here, after every epoch: "
                   "JSON, or CSV (Keras's CSVLogger layout) when FILE ends in .csv")
    p.add_argument("--plot", metavar="CURVES.png", help="draw loss and metrics per epoch (training against "
                   "validation) when training ends (.png, .svg or .pdf; needs matplotlib)")
    p.add_argument("--checkpoint", metavar="DIR", help="write DIR/last.npz after every epoch and "
                   "DIR/best.npz when the monitored value is the best so far")
    p.add_argument("--monitor", metavar="NAME", help="what best.npz is chosen by (default: val_loss when "
                   "there is validation, else loss)")
    p.add_argument("--resume", metavar="CHECKPOINT.npz", help="continue the training a checkpoint stopped "
                   "at, up to the spec's (or --epochs') last epoch")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    add_flag(p)

    p = add("eval", cmd_eval, "evaluate trained weights on the spec's test data")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--weights", required=True, metavar="W.npz")
    data(p)
    target(p)
    p.add_argument("--batch", type=_positive, help="batch size (default: the spec's)")
    p.add_argument("--quiet", "-q", action="store_true")

    p = add("predict", cmd_predict, "run trained weights on features from a .npy file")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--weights", required=True, metavar="W.npz")
    p.add_argument("--input", required=True, metavar="FILE.npy")
    p.add_argument("--output", metavar="FILE.npy", help="write the predictions here")
    target(p)
    p.add_argument("--batch", type=_positive, help="batch size (default: the spec's)")
    p.add_argument("--quiet", "-q", action="store_true")

    p = add("verify", cmd_verify, "train N steps on several targets from the same start and compare")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--targets", help="comma-separated; the first is the reference "
                   "(default: numpy,cpu; with --ranks, the one target: cpu)")
    p.add_argument("--steps", type=_positive, default=verify.STEPS, help=f"default {verify.STEPS}")
    p.add_argument("--batch", type=_positive, help="default: the spec's")
    p.add_argument("--seed", type=_non_negative, help="default: the spec's")
    p.add_argument("--tolerance", type=_fraction,
                   help=f"relative tolerance (default {verify.RTOL:g}; with --ranks {verify.RANKS_RTOL:g})")
    data(p)
    p.add_argument("--quiet", "-q", action="store_true")
    p.add_argument("--ranks", type=int, metavar="N", help="compare N data-parallel processes (MPI) with one "
                   "process, on one target; starts mpiexec itself")

    p = add("compile", cmd_compile, "compile a spec for a target (and emit PTX for cuda)")
    p.add_argument("spec", metavar="SPEC")
    target(p)
    p.add_argument("--emit-ptx", metavar="DIR", help="write the cuda kernels' PTX to DIR")
    p.add_argument("--arch", help="GPU architecture for --emit-ptx, e.g. sm_90")

    register(add, target)
    add("doctor", cmd_doctor, "report what modelc finds on this machine (CPU, GPU, CUDA, the optional extras)")
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: the last finished epoch is kept."""


def _terminate(_signum, _frame):
    raise Terminated()


def _report_bug(err: BaseException) -> int:
    """An exception modelc did not expect: its traceback to a file, a short message, exit 3."""
    import tempfile
    import traceback
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    where = None
    try:
        fd, where = tempfile.mkstemp(prefix="modelc-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(f"modelc {' '.join(sys.argv[1:])}\n\n{text}")
    except OSError:
        where = None
    kind = "ran out of memory" if isinstance(err, MemoryError) else f"{type(err).__name__}: {err}"
    say(f"modelc: internal error: {kind}\n  this is a bug in modelc; please report it"
        + (f" with the traceback written to {where}" if where else f"\n{text}"))
    return EXIT_BUG


def main(argv: list[str] | None = None) -> int:
    from modelc.mpi_env import launched
    if launched()[1] > 1:       # one rank of a data-parallel job
        return run_as_rank(_main, argv)
    return _main(argv)


def _main(argv: list[str] | None) -> int:
    import signal
    try:
        if threading_main():
            signal.signal(signal.SIGTERM, _terminate)
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        return args.func(args)
    except KeyboardInterrupt:
        done = f" (finished before it: {', '.join(_written)})" if _written else ""
        print(f"\nmodelc: interrupted; nothing half-written was left behind{done}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModelcError as err:
        say(str(err))
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # `modelc ir SPEC | head`: the reader left; that is not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except SystemExit:
        raise
    except Exception as err:      # noqa: BLE001 - the last resort: a bug, reported as one
        return _report_bug(err)


def threading_main() -> bool:
    """Signal handlers can be set only from the main thread (tests call main() from others)."""
    import threading
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
