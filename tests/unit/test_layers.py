"""The layers import one way: ops (entry points and tooling) on top, then the edge and the actors,
then brokers/ (contracts, topology, the RabbitMQ plumbing) at the bottom. Read from the source, so a
lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ACTORS = sorted(
    p.name for p in (ROOT / "actors").iterdir() if (p / "__init__.py").exists() and p.name != "runtime"
)


def _imports(package: str) -> list[tuple[str, str]]:
    """(file, imported module) for every import in a package's files."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(str(path.relative_to(ROOT)), alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((str(path.relative_to(ROOT)), node.module))
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize(
    ("package", "above"), [("brokers", {"actors", "edge", "ops"}), ("edge", {"actors", "ops"})]
)
def test_a_lower_layer_imports_nothing_above_it(package: str, above: set[str]):
    assert [(file, module) for file, module in _imports(package) if _top(module) in above] == []


def test_the_actors_import_no_ops_and_no_edge():
    assert [(file, module) for file, module in _imports("actors") if _top(module) in {"ops", "edge"}] == []


@pytest.mark.parametrize("actor", ACTORS)
def test_an_actor_imports_no_other_actor(actor: str):
    others = {f"actors.{other}" for other in ACTORS if other != actor}
    crossing = [
        (file, module)
        for file, module in _imports(f"actors/{actor}")
        if any(module == other or module.startswith(f"{other}.") for other in others)
    ]
    assert crossing == []
