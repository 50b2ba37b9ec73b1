# The import arrows of DESIGN.md section 2, checked on the source: a layer never imports what it must not know.
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package directory -> module prefixes it must never import
FORBIDDEN = {
    "broker/wire": ("trio", "anyio", "socket", "millpond.broker.core", "millpond.broker.server", "millpond.broker.cli", "millpond.client"),
    "broker/core": ("trio", "anyio", "socket", "asyncio", "millpond.broker.server", "millpond.broker.cli", "millpond.client", "time"),
    "broker/server": ("millpond.client",),
    "client": ("millpond.broker.core", "millpond.broker.server", "millpond.broker.cli", "trio"),
}


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


CASES = [
    (str(path.relative_to(ROOT)), banned)
    for package, banned in FORBIDDEN.items()
    for path in sorted((ROOT / package).rglob("*.py"))
]


def test_every_layer_has_modules():
    layers = {package for package in FORBIDDEN for relpath, _ in CASES if relpath.startswith(package + "/")}
    assert layers == set(FORBIDDEN)


@pytest.mark.parametrize("relpath, banned", CASES, ids=[c[0] for c in CASES])
def test_module_imports_only_what_its_layer_may_know(relpath, banned):
    bad = [name for name in imports_of(ROOT / relpath) for b in banned if name == b or name.startswith(b + ".")]
    assert bad == [], f"{relpath} imports {bad}, which its layer must not know (DESIGN.md section 2)"
