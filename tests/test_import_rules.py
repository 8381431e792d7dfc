"""The package split: the engine never imports the console or Textual, and the console
imports of the engine only the contract, the hub client, the errors and the client-side
extraction of a point's files (it reaches the engine only through the hub API).

An AST scan of every module, so an import hidden inside a function counts too. The
finer layers are import-linter contracts (pyproject.toml); this test also proves that
`lint-imports` holds them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RULES = {
    "engine": ("sendense_tui", "textual", "textual_plotext"),
    "sendense_tui": ("engine",),
}
# What the console may import of the engine: the wire, its one client, and what writes
# the hub's tar streams into a folder on the operator's side.
ALLOWED = ("engine.contract", "engine.hub_client", "engine.errors", "engine.extract")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for module in imported_modules(path):
            allowed = any(module == a or module.startswith(f"{a}.") for a in ALLOWED)
            if module.split(".")[0] in forbidden and not allowed:
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
    return bad


@pytest.mark.parametrize(("package", "forbidden"), RULES.items())
def test_package_does_not_import_forbidden(package: str, forbidden: tuple[str, ...]) -> None:
    assert (ROOT / package).is_dir()
    assert violations(package, forbidden) == []


def test_scan_catches_a_hidden_import(tmp_path: Path) -> None:
    module = tmp_path / "sneaky.py"
    module.write_text(
        "def later():\n    from engine.config import get_settings\n    import textual.app\n"
    )
    assert imported_modules(module) == {"engine.config", "textual.app"}


def test_import_linter_keeps_every_layer_contract() -> None:
    lint = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout[-2000:]
    assert " 0 broken" in lint.stdout
