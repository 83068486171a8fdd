"""Shared test set-up: MODELC_DATA points at the shared MNIST copy (../shared/data
from the repository root) when the caller set none. (The `slow` marker is
registered in pyproject.toml.)"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

if "MODELC_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["MODELC_DATA"] = str(SHARED_DATA)

