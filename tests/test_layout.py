"""The package's shape (issue 11): imports go one way, click stays in the CLI,
and no module shares its name with a public function.

Cheap AST checks over the source: they run in milliseconds and fail with the
offending file and line, so a wrong import is caught in the commit that adds
it rather than in a review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ctxpack

PACKAGE = Path(ctxpack.__file__).parent

# Lowest first.  A unit (a top-level module or subpackage of ctxpack) may
# import itself and any unit before it, never one after it.  The public
# front door (``ctxpack/__init__``) re-exports from below; only the CLI sits
# above it.
ORDER = [
    "errors", "units", "watchlink", "fs", "_go", "ignore", "dockerfile", "context", "walker",
    "tar", "index", "printing", "audit", "explainer", "linter", "report",
    "engine", "watch", "compat", "__init__", "cli", "__main__",
]
RANK = {name: i for i, name in enumerate(ORDER)}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out.append((name, path))
    return out


def _absolute(node: ast.ImportFrom, name: str, path: Path) -> str:
    """The absolute module a (possibly relative) ``from`` import names."""
    if not node.level:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """Every ``ctxpack`` module the file imports, lazily or not, with its line."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            node = ast.ImportFrom(module=_absolute(node, name, path), names=node.names, level=0, lineno=node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ctxpack":
            if node.module == "ctxpack":
                # `from ctxpack import fs` names submodules; public names mean the front door.
                for alias in node.names:
                    sub = PACKAGE / alias.name
                    is_module = sub.is_dir() or sub.with_suffix(".py").exists()
                    found.append((f"ctxpack.{alias.name}" if is_module else "ctxpack", node.lineno))
            else:
                found.append((node.module, node.lineno))
                # `from ctxpack.engine import session` names a subpackage too:
                found.extend((f"{node.module}.{a.name}", node.lineno) for a in node.names
                             if (PACKAGE.parent / node.module.replace(".", "/") / a.name).is_dir())
        elif isinstance(node, ast.Import):
            found.extend((a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "ctxpack")
    return found


def test_every_unit_has_a_place() -> None:
    units = {_unit(name) for name, _ in _modules()}
    assert units <= set(ORDER), f"place these in tests/test_layout.py ORDER: {sorted(units - set(ORDER))}"


def test_imports_only_go_downward() -> None:
    wrong = []
    for name, path in _modules():
        me = _unit(name)
        for target, line in _imports(name, path):
            other = _unit(target)
            if other != me and RANK[other] > RANK[me]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {me} imports {target} (above it)")
    assert not wrong, "\n".join(wrong)


def test_click_only_in_the_cli() -> None:
    offenders = []
    for name, path in _modules():
        if _unit(name) == "cli":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(m.split(".")[0] == "click" for m in mods):
                offenders.append(f"{path}:{node.lineno}")
    assert not offenders, offenders


def test_no_module_is_named_like_a_public_function() -> None:
    public_functions = {n for n in ctxpack.__all__ if callable(getattr(ctxpack, n)) and not isinstance(getattr(ctxpack, n), type)}
    clashes = [name for name, _ in _modules() if name.rsplit(".", 1)[-1] in public_functions]
    assert not clashes, clashes


def test_every_module_says_what_it_holds() -> None:
    missing = [str(path) for _, path in _modules() if path.name != "__main__.py" and not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing, missing
