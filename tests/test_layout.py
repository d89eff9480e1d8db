"""The package layout the issue asks for, read from the source (no imports): what each package says it holds.

Module docstrings name every module of :mod:`palette_core`; no package imports another module's private name;
the maths never imports the command line (``python -m palette_core`` only delegates to it).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("palette_core", "palette_cli", "palette_queue", "nodes", "train")


def modules(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


def imported_names(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from module import name`` in the file (relative modules keep their dots)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            found += [("." * node.level + (node.module or ""), a.name) for a in node.names]
    return found


def test_the_palette_core_docstring_names_every_module():
    doc = ast.get_docstring(ast.parse((REPO / "palette_core" / "__init__.py").read_text(encoding="utf-8")))
    named = set(re.findall(r":mod:`\.(\w+)`", doc))
    present = {p.stem for p in (REPO / "palette_core").glob("*.py") if not p.stem.startswith("__")}
    assert named == present, f"not named: {sorted(present - named)}; named but absent: {sorted(named - present)}"


def test_the_palette_cli_docstring_names_every_module():
    doc = ast.get_docstring(ast.parse((REPO / "palette_cli" / "__init__.py").read_text(encoding="utf-8")))
    named = set(re.findall(r":mod:`\.(\w+)`", doc))
    assert named == {p.stem for p in (REPO / "palette_cli").glob("*.py") if not p.stem.startswith("__")}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_imports_a_private_name_of_another(package):
    private = [
        f"{path.relative_to(REPO)}: from {module} import {name}"
        for path in modules(package)
        for module, name in imported_names(path)
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not private, "make these public or move them:\n" + "\n".join(private)


def test_the_maths_does_not_import_the_command_line():
    for path in modules("palette_core"):
        uses = [m for m, _ in imported_names(path) if m.split(".")[0] == "palette_cli"]
        assert not uses or path.name == "__main__.py", f"{path.name} imports {uses}"
