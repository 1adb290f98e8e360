"""Packaging: one place for the version, extras for the optional parts, a core install without
them, floors the test environment satisfies, and the typing marker shipped."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import medforensics

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
EXTRAS = PROJECT["optional-dependencies"]


def _names(reqs: list[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", Requirement(r).name.lower()) for r in reqs}


def test_version_has_one_source() -> None:
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "medforensics.__version__"}
    assert medforensics.__version__ == importlib.metadata.version("medforensics")
    Version(medforensics.__version__)  # a valid version string


def test_extras_declared_and_core_without_them() -> None:
    assert {"fastapi", "uvicorn", "python-multipart"} <= _names(EXTRAS["serve"])
    assert {"onnx", "onnxruntime", "onnxscript"} <= _names(EXTRAS["export"])
    assert "dicom" in EXTRAS
    core = _names(PROJECT["dependencies"])
    for extra in ("serve", "export", "dicom"):
        assert not core & _names(EXTRAS[extra]), f"{extra} packages in the core install"
    # `make test` installs dev: it pulls every other extra, so every test can run
    self_refs = [Requirement(r) for r in EXTRAS["dev"] if Requirement(r).name == "medforensics"]
    assert len(self_refs) == 1
    assert set(self_refs[0].extras) == set(EXTRAS) - {"dev"}
    assert {"pytest", "httpx"} <= _names(EXTRAS["dev"])


def _installed(name: str) -> Version | None:
    try:
        return Version(importlib.metadata.version(name))
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.mark.parametrize("req", [r for extra in (PROJECT["dependencies"], *EXTRAS.values())
                                 for r in extra if not r.startswith("medforensics")])
def test_floors_are_met_by_the_tested_environment(req: str) -> None:
    r = Requirement(req)
    got = _installed(r.name)
    if got is None:
        pytest.skip(f"{r.name} is not installed here")
    assert got in r.specifier or Version(got.base_version) in r.specifier, (
        f"{req}: the tests run with {r.name} {got}")
    floors = [Version(s.version) for s in r.specifier if s.operator == ">="]
    assert floors, f"{req}: no tested floor"


def test_typing_marker_shipped() -> None:
    assert (ROOT / "src" / "medforensics" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["medforensics"]
