"""Shared test set-up: the `slow` marker, and MODELC_DATA pointing at the shared
MNIST copy (../shared/data from the repository root) when the caller set none."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

if "MODELC_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["MODELC_DATA"] = str(SHARED_DATA)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains on MNIST or otherwise takes minutes "
                            "(deselect with -m 'not slow')")
