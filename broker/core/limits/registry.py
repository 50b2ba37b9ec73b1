# The algorithm registry: a plain dict from name to limiter class (the built-ins and what an embedding program
# register()s), plus the operator's plug-ins: names mapped to "package.module:ClassName" in the broker's config, and
# entry points of the "millpond.limits" group installed in the broker's environment. A name a client sends is looked
# up there and nowhere else: nothing a client names is ever imported unless the operator registered it. Must not
# know about policies or the server; importing an operator's plug-in module is the only side effect.
from __future__ import annotations

import importlib
import re
from importlib import metadata
from typing import Any, Mapping

from millpond.broker.core.limits.leaky_bucket import LeakyBucket
from millpond.broker.core.limits.token_bucket import TokenBucket
from millpond.broker.core.limits.windows import FixedWindow, SlidingLog, SlidingWindow

ENTRY_POINT_GROUP = "millpond.limits"
DEFAULT_ALGORITHM = "leaky_bucket"

ALGORITHMS: dict[str, type] = {
    "leaky_bucket": LeakyBucket,
    "token_bucket": TokenBucket,
    "fixed_window": FixedWindow,
    "sliding_log": SlidingLog,
    "sliding_window": SlidingWindow,
}
BUILTIN = frozenset(ALGORITHMS)

_REQUIRED = ("acquire", "peek", "sweep", "forget", "__len__")
_PLUGIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_SPEC = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class UnknownAlgorithm(LookupError):
    """The name is neither built in, nor registered by the operator (config or entry point), nor loadable."""


class Algorithms:
    """The algorithms a limit policy may name, the only way from a name to a class.

    ``plugins``: the operator's ``{name: "package.module:ClassName"}`` (the config file's ``[limit_algorithms]``
    table, ``millpond serve --limit-algorithm NAME=SPEC``). A policy names an algorithm by a key of ``ALGORITHMS``
    (built in, or added with ``register``), by a plug-in's name or its exact registered ``SPEC``, or by the name of
    an entry point in the ``millpond.limits`` group (``[project.entry-points."millpond.limits"]`` in an installed
    package's pyproject.toml). Anything else raises ``UnknownAlgorithm`` without importing anything, so a client's
    ``limits_set`` can never load code the operator did not choose. Raises ``ValueError`` for a malformed table.
    """

    def __init__(self, plugins: Mapping[str, str] | None = None) -> None:
        self._plugins: dict[str, str] = dict(check_plugins(plugins or {}))
        self._by_spec = {spec: name for name, spec in self._plugins.items()}
        self._loaded: dict[str, type] = {}

    def resolve(self, name: object) -> type:
        """The limiter class for ``name``; ``UnknownAlgorithm`` if the operator made no such name available."""
        if not isinstance(name, str) or not name:
            raise UnknownAlgorithm(f"an algorithm name must be a non-empty string, got {name!r}"[:300])
        found = ALGORITHMS.get(name)
        if found is not None:
            return found
        plugin = self._by_spec.get(name, name)
        spec = self._plugins.get(plugin)
        if spec is not None:
            cls = self._loaded.get(plugin)
            if cls is None:
                cls = self._loaded[plugin] = _import(plugin, spec)
            return cls
        if ":" not in name:  # a spec is never an entry point's name: no lookup that could load a module by it
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                if ep.name == name:
                    try:
                        return _checked(name, ep.load())
                    except Exception as exc:  # a broken plug-in package must not stop configuration of the others
                        raise UnknownAlgorithm(f"cannot load limiter plug-in {name!r} ({ep.value}): {exc}") from None
        known = sorted(ALGORITHMS) + sorted(self._plugins)
        raise UnknownAlgorithm(
            f"unknown limit algorithm {name[:200]!r}: available are {', '.join(known)} and the "
            f"{ENTRY_POINT_GROUP!r} entry points; a plug-in must be registered by the broker's operator "
            f"(config [limit_algorithms] or millpond serve --limit-algorithm NAME=package.module:Class)"
        )

    def load_all(self) -> None:
        """Import every configured plug-in now (at start), so a wrong spec stops the broker, not a later policy."""
        for name in self._plugins:
            self.resolve(name)


def check_plugins(plugins: object) -> dict[str, str]:
    """The operator's ``{name: "package.module:ClassName"}`` table, checked; ``ValueError`` names the bad entry."""
    if not isinstance(plugins, Mapping):
        raise ValueError(f"limit_algorithms must be a table of name = \"package.module:Class\", got {plugins!r}")
    for name, spec in plugins.items():
        if not isinstance(name, str) or not _PLUGIN_NAME.fullmatch(name) or ":" in name:
            raise ValueError(f"limit_algorithms: a name is 1-100 characters of [A-Za-z0-9_.-], got {name!r}")
        if name in BUILTIN:
            raise ValueError(f"limit_algorithms: {name!r} is a built-in algorithm")
        if not isinstance(spec, str) or not _SPEC.fullmatch(spec):
            raise ValueError(f"limit_algorithms.{name} must be \"package.module:ClassName\", got {spec!r}")
    return dict(plugins)


def resolve(name: object) -> type:
    """``Algorithms().resolve(name)``: built-ins, ``register``ed names and entry points; no configured plug-ins."""
    return Algorithms().resolve(name)


def register(name: str, cls: type) -> None:
    """Add a limiter class under ``name`` (e.g. from an embedding program). Replaces an existing plug-in name;
    refuses to shadow a built-in one."""
    if name in BUILTIN and ALGORITHMS.get(name) is not cls:
        raise ValueError(f"{name!r} is a built-in algorithm")
    ALGORITHMS[name] = _checked(name, cls)


def _import(name: str, spec: str) -> type:
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # an operator's broken plug-in: one clear line, whatever its import raised
        raise UnknownAlgorithm(f"cannot load limiter plug-in {name!r} ({spec}): {type(exc).__name__}: {exc}") from None
    return _checked(name, obj)


def _checked(name: str, obj: Any) -> type:
    if not isinstance(obj, type):
        raise UnknownAlgorithm(f"limiter plug-in {name!r} is not a class")
    missing = [m for m in _REQUIRED if not callable(getattr(obj, m, None))]
    if missing or not isinstance(getattr(obj, "modes", None), tuple):
        raise UnknownAlgorithm(
            f"limiter plug-in {name!r} lacks {', '.join(missing) or 'modes'} (see millpond.broker.core.limits.base.Algorithm)"
        )
    return obj
