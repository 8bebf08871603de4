"""The apps depend one way: processes → workflows → subscriptions (→ orchestrator_site); nothing imports back up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Each app and the apps it must never import (at module level or inside a function alike).
NEVER = {
    "workflows": {"processes"},
    "subscriptions": {"processes", "workflows"},
}


def imported_apps(path: Path) -> set[tuple[int, str]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name.split(".")[0]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("app", sorted(NEVER))
def test_an_app_imports_nothing_from_the_apps_above_it(app):
    offending = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / app).rglob("*.py")) if "migrations" not in path.parts
        for line, name in sorted(imported_apps(path)) if name in NEVER[app]
    ]

    assert offending == []
