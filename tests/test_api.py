"""The public API module: explicit imports that editors and type checkers can follow, every
advertised name resolves, and it needs only the core install (no web service, no ONNX)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[1] / "src" / "medforensics" / "api.py"


def test_every_export_resolves_and_unknown_names_raise() -> None:
    from medforensics import api

    for name in api.__all__:
        assert callable(getattr(api, name)), name
    assert len(set(api.__all__)) == len(api.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        api.nope  # noqa: B018


def test_exports_are_plain_imports() -> None:
    tree = ast.parse(API.read_text(encoding="utf-8"))
    imported = {a.asname or a.name for node in tree.body if isinstance(node, ast.ImportFrom)
                for a in node.names}
    exported = next(ast.literal_eval(node.value) for node in tree.body
                    if isinstance(node, ast.Assign)
                    and any(getattr(t, "id", None) == "__all__" for t in node.targets))
    assert set(exported) <= imported  # every name is a static import a type checker sees
    assert not [node for node in tree.body
                if isinstance(node, ast.FunctionDef) and node.name in ("__getattr__", "__dir__")]


BLOCK_OPTIONAL = """
import importlib.abc, sys
OPTIONAL = {"fastapi", "starlette", "uvicorn", "python_multipart", "onnx", "onnxruntime",
            "onnxscript", "highdicom", "dicomweb_client", "pynetdicom"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in OPTIONAL:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None
sys.meta_path.insert(0, Block())
import medforensics.api as api
assert all(callable(getattr(api, n)) for n in api.__all__)
print(sorted(m for m in sys.modules if m.split(".")[0] in OPTIONAL))
"""


def test_api_imports_without_the_extras() -> None:
    res = subprocess.run([sys.executable, "-c", BLOCK_OPTIONAL], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"
