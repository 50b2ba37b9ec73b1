# The algorithm registry: a plain dict from name to limiter class, plus resolution of third-party plug-ins named
# "package.module:ClassName" or registered under the "millpond.limits" entry-point group. Must not know about
# policies or the server; importing a plug-in module is the only side effect, and only at configuration time.
from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

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

_REQUIRED = ("acquire", "peek", "sweep", "forget", "__len__")


class UnknownAlgorithm(LookupError):
    """The name is neither built in, nor importable as "module:Class", nor an entry point of millpond.limits."""


def resolve(name: str) -> type:
    """The limiter class for ``name``: a key of ALGORITHMS, then ``"package.module:ClassName"``, then an entry
    point named ``name`` in the ``millpond.limits`` group (``[project.entry-points."millpond.limits"]`` in the
    plug-in's pyproject.toml). A class found by import is checked for the Algorithm protocol's methods but not
    added to ALGORITHMS; ``register`` does that."""
    if not isinstance(name, str) or not name:
        raise UnknownAlgorithm(f"an algorithm name must be a non-empty string, got {name!r}")
    found = ALGORITHMS.get(name)
    if found is not None:
        return found
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise UnknownAlgorithm(f"cannot load limiter plug-in {name!r}: {exc}") from None
        return _checked(name, obj)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                return _checked(name, ep.load())
            except Exception as exc:  # a broken plug-in package must not stop configuration of the others
                raise UnknownAlgorithm(f"cannot load limiter plug-in {name!r} ({ep.value}): {exc}") from None
    raise UnknownAlgorithm(
        f"unknown limit algorithm {name!r}: built in are {', '.join(sorted(ALGORITHMS))}; a plug-in is named "
        f"'package.module:ClassName' or registered in the {ENTRY_POINT_GROUP!r} entry-point group"
    )


def register(name: str, cls: type) -> None:
    """Add a limiter class under ``name`` (e.g. from an embedding program). Replaces an existing plug-in name;
    refuses to shadow a built-in one."""
    builtin = {"leaky_bucket", "token_bucket", "fixed_window", "sliding_log", "sliding_window"}
    if name in builtin and ALGORITHMS.get(name) is not cls:
        raise ValueError(f"{name!r} is a built-in algorithm")
    ALGORITHMS[name] = _checked(name, cls)


def _checked(name: str, obj: Any) -> type:
    if not isinstance(obj, type):
        raise UnknownAlgorithm(f"limiter plug-in {name!r} is not a class")
    missing = [m for m in _REQUIRED if not callable(getattr(obj, m, None))]
    if missing or not isinstance(getattr(obj, "modes", None), tuple):
        raise UnknownAlgorithm(
            f"limiter plug-in {name!r} lacks {', '.join(missing) or 'modes'} (see millpond.broker.core.limits.base.Algorithm)"
        )
    return obj
