"""The import direction between the project's roles: api -> indexer <- workers, nothing imports upward.

Every module's imports are read from its syntax tree (including imports inside functions), so a lazy
import cannot slip past the rule.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROLES = ("indexer", "api", "workers", "eval", "bench")
# Which roles each role may import. indexer is the shared layer and imports only itself; the server and
# the workers never import each other; eval and bench are tools on top.
ALLOWED = {
    "indexer": {"indexer"},
    "api": {"api", "indexer"},
    "workers": {"workers", "indexer"},
    "eval": {"eval", "indexer"},
    "bench": {"bench", "indexer", "workers"},
}


def imported_roles(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import of one of the project's roles."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.extend((node.lineno, name.split(".")[0]) for name in names if name.split(".")[0] in ROLES)
    return found


def violations(root: Path) -> list[str]:
    out = []
    for role in ROLES:
        for path in sorted((root / role).rglob("*.py")):
            for line, target in imported_roles(ast.parse(path.read_text(encoding="utf-8"))):
                if target not in ALLOWED[role]:
                    out.append(f"{path.relative_to(root)}:{line} imports {target} ({role} may import "
                               f"{sorted(ALLOWED[role])})")
    return out


def test_no_module_imports_upward_or_across_roles() -> None:
    assert violations(REPO) == []


@pytest.mark.parametrize(("role", "source"), [
    ("indexer", "from api.params import ReadParams\n"),
    ("indexer", "def f():\n    import workers.tasks\n"),
    ("api", "from workers import tasks\n"),
    ("workers", "import eval.cli\n"),
    ("eval", "from api.services import build_services\n"),
])
def test_the_rule_catches_an_upward_import(tmp_path: Path, role: str, source: str) -> None:
    for name in ROLES:
        (tmp_path / name).mkdir()
    (tmp_path / role / "bad.py").write_text(source, encoding="utf-8")
    assert len(violations(tmp_path)) == 1
