# The import arrows of DESIGN.md section 2 and docs/architecture.md, checked on the source as an allowlist: each
# layer names what it may import (anything else fails, so a new dependency is a decision made here), and the
# package has no import cycles.
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Standard-library modules that neither wait nor touch files, sockets or clocks: any layer may use them.
PURE = {
    "__future__", "abc", "array", "bisect", "collections", "contextlib", "dataclasses", "enum", "fnmatch",
    "fractions", "functools", "hashlib", "heapq", "inspect", "itertools", "json", "logging", "math", "operator",
    "ipaddress", "random", "re", "secrets", "string", "struct", "types", "typing", "uuid", "zlib", "binascii",
}
STORAGE = {"os", "shutil", "fcntl", "pathlib", "errno", "threading", "tempfile", "importlib"}

# Layer (a folder, or a module path) -> what it may import besides PURE (a name allows its submodules). The most
# specific layer that contains a module applies.
ALLOW: dict[str, set[str]] = {
    "broker/wire": {"msgpack", "millpond.broker.wire"},
    # the record batch codec: aiokafka's compiled record module and CRC-32C, nowhere else
    "broker/wire/batch.py": {"aiokafka", "crc32c", "millpond.broker.wire"},
    "broker/config.py": {"tomllib", "pathlib", "millpond.broker.wire"},
    # the cores: no trio, sockets, clocks, threads or file calls...
    "broker/core": {"msgpack", "sortedcontainers", "pathlib", "millpond", "millpond.broker.config",
                    "millpond.broker.wire", "millpond.broker.core"},
    # ...except the storage modules, the one place that touches files
    "broker/core/log": {"msgpack", "sortedcontainers", "millpond.broker.config", "millpond.broker.wire",
                        "millpond.broker.core"} | STORAGE,
    "broker/core/limits/registry.py": {"importlib", "millpond.broker.core", "millpond.broker.wire"},
    # fan-out (subscriptions, filter policies): a core with the cores' rules
    "broker/core/fanout": {"msgpack", "sortedcontainers", "pathlib", "millpond", "millpond.broker.config",
                           "millpond.broker.wire", "millpond.broker.core", "urllib.parse"},
    # ...whose one HTTP call (a webhook POST) is made here, only inside a Job's work in a worker thread
    "broker/core/fanout/http.py": {"httpx", "socket", "millpond.broker.core.fanout"},
    # the server: Trio, the engine's public API, the codecs; never a core's internals
    "broker/server": {"trio", "sortedcontainers", "os", "time", "pathlib", "shutil", "tempfile", "resource", "errno",
                      "socket", "threading", "millpond.broker.config", "millpond.broker.wire", "millpond.broker.server",
                      "millpond.broker.core.engine", "millpond.broker.core.outcomes"},
    # the daemon's garbage-collection schedule (gc.freeze and full passes)
    "broker/server/collector.py": {"gc", "time", "trio"},
    # a codec translates to the cores' request and answer types
    "broker/server/frontends": {"msgpack", "millpond.broker.config", "millpond.broker.wire",
                                "millpond.broker.server.frontends", "millpond.broker.core.engine",
                                "millpond.broker.core.outcomes", "millpond.broker.core.log.api",
                                "millpond.broker.core.groups.api", "millpond.broker.core.groups.types",
                                "millpond.broker.core.limits.api", "millpond.broker.core.queues.api",
                                "millpond.broker.core.queues.push", "millpond.broker.core.fanout.api"},
    # the client speaks the wire protocol and never sees the broker's insides
    "client": {"anyio", "sniffio", "msgpack", "copy", "os", "socket", "threading", "time", "weakref",
               "millpond.broker.wire", "millpond.client"},
}
# Modules imported only inside a function or under TYPE_CHECKING are not arrows of the layer and are not checked.


def layer_of(relpath: str) -> str | None:
    best = None
    for layer in ALLOW:
        if relpath == layer or relpath.startswith(layer.rstrip("/") + "/"):
            if best is None or len(layer) > len(best):
                best = layer
    return best


def top_level_imports(path: Path) -> list[str]:
    """Modules imported at module level (not inside functions, not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(), str(path))
    names: list[str] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                names.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.level:
                    raise AssertionError(f"{path}: relative import (use millpond.*)")
                names.append(node.module)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(tree.body)
    return names


MODULES = sorted(str(p.relative_to(ROOT)) for top in ("broker", "client") for p in (ROOT / top).rglob("*.py")
                 if layer_of(str(p.relative_to(ROOT))) is not None)


def allowed(name: str, allow: set[str]) -> bool:
    return any(name == a or name.startswith(a + ".") for a in PURE | allow)


def test_every_layer_has_modules():
    assert {layer_of(m) for m in MODULES} == set(ALLOW)


@pytest.mark.parametrize("relpath", MODULES)
def test_module_imports_only_what_its_layer_may_know(relpath):
    allow = ALLOW[layer_of(relpath)]
    bad = [name for name in top_level_imports(ROOT / relpath) if not allowed(name, allow)]
    assert bad == [], f"{relpath} imports {bad}, which its layer may not (tests/test_layers.py, DESIGN.md section 2)"


def test_the_allowlists_name_real_modules():
    stdlib = set(sys.stdlib_module_names)
    for layer, names in ALLOW.items():
        for name in names:
            top = name.split(".")[0]
            third_party = {"millpond", "msgpack", "sortedcontainers", "trio", "anyio", "sniffio", "aiokafka", "crc32c", "httpx"}
            assert top in stdlib or top in third_party, (layer, name)


def module_name(relpath: str) -> str:
    parts = relpath[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["millpond", *parts])


def test_no_import_cycles():
    modules = {module_name(str(p.relative_to(ROOT))): p for top in ("broker", "client", "bench")
               for p in (ROOT / top).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for imported in top_level_imports(path):
            # `from package import name` may name a submodule: take the longest known module it refers to
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                deps.add(imported)
        graph[name] = deps
    state: dict[str, int] = {}
    cycles = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep] if dep in stack else [node, dep])
            elif dep not in state:
                walk(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert cycles == []
