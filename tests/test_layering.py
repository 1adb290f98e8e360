"""The package's dependency direction (docs/design.md, "Layers"), enforced.

Every ``medforensics`` import, at module top or inside a function, is read from the source with
``ast``. A module may import its own layer or a lower one, never a higher one, and the import
graph between modules has no cycles. Domain code (everything below the application layer) never
imports ``service`` or ``cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "medforensics"

#: Bottom to top. A module's layer is that of the longest prefix listed here.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("medforensics", "medforensics.errors", "medforensics.common"),
    ("medforensics.io",),
    ("medforensics.dsp",),
    ("medforensics.data",),
    ("medforensics.synth",),
    ("medforensics.models",),
    ("medforensics.eval",),
    ("medforensics.training",),
    ("medforensics.source",),
    ("medforensics.forgery",),
    ("medforensics.report", "medforensics.pacs"),
    ("medforensics.service", "medforensics.cli", "medforensics.demo", "medforensics.api",
     "medforensics.__main__"),
)
APPLICATION = ("medforensics.service", "medforensics.cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every medforensics module (or package) that ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("medforensics"):
                for alias in node.names:  # ``from pkg import submodule`` names the submodule
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if _exists(sub) else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("medforensics"))
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def _layer(module: str) -> int:
    best, best_len = None, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS and "
                             "to docs/design.md")
    return best


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(SRC.rglob("*.py")):
        graph[_module_name(path)] = {m for m in _imports(path) if m != _module_name(path)}
    return graph


def test_every_module_has_a_layer() -> None:
    for module in _graph():
        _layer(module)


def test_no_upward_imports() -> None:
    bad = []
    for module, targets in _graph().items():
        for target in sorted(targets):
            if target == "medforensics":
                continue  # the package root holds only the version
            if _layer(target) > _layer(module):
                bad.append(f"{module} -> {target}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_domain_code_never_imports_the_application_layer() -> None:
    bad = [f"{m} -> {t}" for m, ts in _graph().items() for t in ts
           if not m.startswith(APPLICATION) and m not in ("medforensics.api", "medforensics.__main__")
           and not m.startswith("medforensics.demo") and t.startswith(APPLICATION)]
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    graph = _graph()
    # Packages import their submodules' names through __init__; an edge to a package is an
    # edge to its __init__ module only.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strongconnect(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_layer_table_is_the_documented_one() -> None:
    design = (SRC.parents[1] / "docs" / "design.md").read_text(encoding="utf-8")
    for prefixes in LAYERS[1:]:
        for prefix in prefixes:
            name = prefix.split(".", 1)[1]
            if not name.startswith("__"):
                assert f"`{name}" in design, f"docs/design.md does not mention layer {name}"


#: Files still being split, with the size they may not grow past.
OVERSIZE: dict[str, int] = {
}


@pytest.mark.parametrize("limit", [700])
def test_no_source_file_over_the_size_limit(limit: int) -> None:
    sizes = {p.relative_to(SRC).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in SRC.rglob("*.py")}
    big = {k: v for k, v in sizes.items() if v > OVERSIZE.get(k, limit)}
    assert not big, f"files over {limit} lines: {big}"


LONG_FUNCTION = 80
#: Marker that must stand on the line right above a longer function (or its decorators),
#: followed by the reason.
LONG_REASON = "# long function:"


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body, its docstring left out."""
    body = fn.body
    first = body[0]
    docstring = (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                 and isinstance(first.value.value, str))
    start = first.end_lineno + 1 if docstring and len(body) > 1 else first.lineno
    return fn.end_lineno - start + 1


def test_long_functions_say_why() -> None:
    unexplained = []
    for path in sorted(SRC.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if _body_lines(node) <= LONG_FUNCTION:
                continue
            top = min([node.lineno] + [d.lineno for d in node.decorator_list])
            above = lines[top - 2].strip() if top >= 2 else ""
            if not above.startswith(LONG_REASON) or len(above) < len(LONG_REASON) + 10:
                unexplained.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} "
                                   f"({_body_lines(node)} lines)")
    assert not unexplained, (f"functions over {LONG_FUNCTION} lines without a "
                             f"'{LONG_REASON} <reason>' line above them:\n"
                             + "\n".join(unexplained))
