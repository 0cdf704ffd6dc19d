"""Test doubles and experiments stay out of the product's layers (issue 13, item 5)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(folder: Path) -> dict[str, set[str]]:
    out = {}
    for path in sorted(folder.glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        out[path.name] = names
    return out


def test_active_learning_imports_neither_simulation_nor_test_doubles():
    for name, mods in _imported_modules(ROOT / "active_learning").items():
        bad = {m for m in mods if m.startswith(("clumptool.simulation", "clumptool.testing"))}
        assert not bad, f"active_learning/{name} imports {bad}"


def test_fake_panoptes_lives_in_the_testing_package():
    assert not (ROOT / "active_learning" / "fake_panoptes.py").exists()
    assert not (ROOT / "active_learning" / "loop.py").exists()
    from clumptool.testing.fake_panoptes import FakePanoptes  # noqa: F401

    assert '"clumptool.testing",' in (ROOT / "pyproject.toml").read_text()  # installed with the package
