"""The layers point one way: ``streams`` (the app) may use ``topics`` (the Kafka layer) and
``localkafka`` (the development broker), never the other way round, so either can be read,
tested and reused without the app."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOWER_LAYERS = ("topics", "localkafka")
FORBIDDEN = ("streams", "faust")  # the app, and the framework only the app builds on


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", LOWER_LAYERS)
def test_lower_layers_do_not_import_the_app(package: str) -> None:
    sources = sorted((REPO / package).rglob("*.py"))
    assert sources, f"no sources under {package}/"
    offending = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in sources
        for line, module in _imported_modules(path)
        if module.split(".")[0] in FORBIDDEN
    ]
    assert offending == []


def test_the_scan_sees_imports_of_every_form(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "import streams.errors\nfrom streams import settings\nfrom . import sibling\n"
        "def f():\n    import faust\n"
    )
    assert _imported_modules(source) == [(1, "streams.errors"), (2, "streams"), (5, "faust")]
