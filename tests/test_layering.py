"""The import arrows run only downward (docs/architecture.md): the ground floor `recursive_reasoning.core` imports no
other rr code; `strategies` and `datamodules` import only the ground floor and themselves, never each other; the top
floor (the rest of `recursive_reasoning`) may import anything. No rr import hides inside a function to dodge a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("recursive_reasoning", "strategies", "datamodules")


def floor(module: str) -> str:
    """'core', 'strategies', 'datamodules' or 'top' for a dotted rr module name."""
    if module == "recursive_reasoning.core" or module.startswith("recursive_reasoning.core."):
        return "core"
    if module.split(".")[0] in ("strategies", "datamodules"):
        return module.split(".")[0]
    return "top"


ALLOWED = {
    "core": {"core"},
    "strategies": {"core", "strategies"},
    "datamodules": {"core", "datamodules"},
    "top": {"core", "strategies", "datamodules", "top"},
}


def rr_modules() -> list[tuple[str, Path]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found.append((name, path))
    return found


def imports(tree: ast.AST) -> list[tuple[str, int, bool]]:
    """(imported rr module, line, inside a function) for every import of rr code."""
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            out.extend((n, child.lineno, in_function) for n in names if n.split(".")[0] in PACKAGES)
            visit(child, inner)

    visit(tree, False)
    return out


def test_the_floors_are_what_the_architecture_says() -> None:
    names = {name for name, _ in rr_modules()}
    assert {"recursive_reasoning.core.network", "recursive_reasoning.core.files", "datamodules.kinds.base",
            "strategies.base", "recursive_reasoning.module"} <= names
    assert floor("recursive_reasoning.core.network") == "core" and floor("recursive_reasoning.module") == "top"


@pytest.mark.parametrize(("name", "path"), rr_modules(), ids=[name for name, _ in rr_modules()])
def test_imports_run_only_downward(name: str, path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {target} ({floor(target)} floor)"
             for target, line, _ in imports(tree) if floor(target) not in ALLOWED[floor(name)]]
    hidden = [f"{path.relative_to(ROOT)}:{line} imports {target} inside a function"
              for target, line, in_function in imports(tree) if in_function]
    assert not wrong, f"{name} is on the {floor(name)} floor but imports upward or sideways: {wrong}"
    assert not hidden, f"rr imports belong at the top of the module, not hidden in functions: {hidden}"


def test_the_package_root_imports_nothing() -> None:
    """`import recursive_reasoning.core` must not pull in the Lightning module (no lazy __getattr__ either)."""
    source = (ROOT / "recursive_reasoning" / "__init__.py").read_text()
    tree = ast.parse(source)
    assert not imports(tree) and "__getattr__" not in source


def test_the_readme_layout_lists_every_module() -> None:
    """The README's layout block names every module of the three packages, so a new file is never undocumented."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    missing = [str(path.relative_to(ROOT)) for _, path in rr_modules()
               if path.name not in ("__init__.py", "__main__.py") and path.name not in block]
    assert not missing, f"README.md's layout block does not list {missing}"
