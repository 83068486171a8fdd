#!/usr/bin/env bash
# The GPU check (issue 12): one JSON line per result on stdout and in --out FILE
# (default bench/gpu_check.jsonl). bench/gpu_check.py says what it checks.
#   bench/gpu_check.sh [--out FILE] [--data DIR] [--smoke]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "${PYTHON:-.venv/bin/python}" bench/gpu_check.py "$@"
