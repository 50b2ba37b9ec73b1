# What the examples share: the broker an example runs against (the one --broker names, else one embedded for the
# run) and running it so that a broker it cannot reach is one line on stderr, not a traceback. Each example runs as
# `python examples/NAME.py`, which puts this folder first on sys.path: it imports this module as `examplekit`.
from __future__ import annotations

import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from millpond import open_broker
from millpond.client.errors import ConnectionClosedError


@asynccontextmanager
async def broker_address(address: str | None, **embedded: Any) -> AsyncIterator[str]:
    """``address`` ("HOST:PORT") if given, else the address of a broker embedded for the block, with a temporary
    data directory; ``embedded``: its ``BrokerConfig`` fields (``fsync="never"``, ``limit_algorithms=...``)."""
    if address:
        yield address
    else:
        async with open_broker(None, **embedded) as broker:
            yield broker.address


def run_example(name: str, body: Callable[[], Any]) -> Any:
    """Call ``body()``; a broker it cannot reach (a dead --broker, a host name that does not resolve) or a
    malformed address ends the program with one line, ``NAME: reason``, and exit status 1."""
    try:
        return body()
    except BaseException as exc:  # noqa: B902  (trio wraps a task's error in exception groups)
        reason = _reason(exc)
        if reason is None:
            raise
        print(f"{name}: {reason}", file=sys.stderr)
        raise SystemExit(1) from None


def _reason(exc: BaseException) -> str | None:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, ConnectionClosedError):
        return exc.message
    if isinstance(exc, ValueError) and str(exc).startswith(("broker address must be", "broker port must be")):
        return str(exc)
    return None
