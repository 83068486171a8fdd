"""The optional extras: pyproject.toml and modelc.extras name the same packages, the README's
set-up command installs every one of them, and a missing one is a message, not a traceback."""
import re
from pathlib import Path

import pytest

from modelc import extras
from modelc.errors import ModelcError

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")


def _declared() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {extra: [re.split(r"[<>=\[ ;]", req, maxsplit=1)[0] for req in reqs]
            for extra, reqs in project["optional-dependencies"].items()}


def test_pyproject_and_modelc_name_the_same_packages():
    declared = _declared()
    for extra, packages in extras.EXTRAS.items():
        assert declared[extra] == list(packages) + list(extras.PROGRAMS.get(extra, ())), extra


def test_the_readme_and_ci_install_every_extra():
    for path in ("README.md", ".ci/run"):
        (installed,) = re.findall(r"pip install -q -e '\.\[([a-z,]+)\]'", (ROOT / path).read_text())
        assert set(installed.split(",")) == set(_declared()), path


def test_a_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "plot", ("matplotlib", "no_such_package_xyz"))
    assert extras.missing("plot") == ["no_such_package_xyz"]
    with pytest.raises(ModelcError) as err:
        extras.require("plot", "drawing the curves")
    assert "drawing the curves needs the Python package no_such_package_xyz" in str(err.value)
    assert "pip install 'modelc[plot]'" in str(err.value)
