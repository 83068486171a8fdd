"""The `modelc` command's entry point. It imports nothing before it can answer Ctrl-C, so an
interrupt while modelc is still starting exits 130 quietly instead of with a traceback."""
import sys


def main() -> int:
    try:
        from modelc.cli import main as run
        return run()
    except KeyboardInterrupt:
        sys.stderr.write("\nmodelc: interrupted\n")
        return 130


if __name__ == "__main__":     # python -m modelc.entry: how --ranks starts each rank (under python -m mpi4py)
    sys.exit(main())
