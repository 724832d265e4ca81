"""The layering docs/architecture.md describes holds in the tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reidctl"
CLI_LAYER = (PACKAGE / "commands", PACKAGE / "cli.py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _library_modules() -> list[Path]:
    return [
        p
        for p in sorted(PACKAGE.rglob("*.py"))
        if not any(p == c or c in p.parents for c in CLI_LAYER) and p.name != "__main__.py"
    ]


def test_library_modules_import_neither_click_nor_the_cli() -> None:
    offenders = []
    for path in _library_modules():
        for name in _imports(path):
            if name == "click" or name.startswith(("click.", "reidctl.commands", "reidctl.cli")):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_every_path_in_the_architecture_page_exists() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    paths = sorted(set(re.findall(r"reidctl/[\w/]*[\w]+(?:\.py)?/?", text)))
    assert len(paths) > 20
    missing = [p for p in paths if not (ROOT / p.rstrip("/")).exists()]
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
