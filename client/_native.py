# The event loop's own primitives, looked up once. anyio's Event(), current_time(), move_on_after() and
# CancelScope() ask which loop is running on every call (a few microseconds each); the producer makes an event per
# batch, the consumer a few per fetch, the connection one per awaited request, which with small batches (keyed
# records over many partitions, linger_s=0) or small requests is a measurable part of their cost.
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import anyio
import sniffio


class Native(NamedTuple):
    """What a client object makes and reads many times, as the running loop's own: ``event()`` (``set()``,
    ``is_set()``, ``await wait()``), ``clock()`` (the loop's seconds, as cancel scopes' deadlines are),
    ``move_on_after(seconds)`` (any float: a negative one is 0) and ``cancel_scope()`` (``cancel()``,
    ``cancelled_caught``)."""

    event: Callable[[], Any]
    clock: Callable[[], float]
    move_on_after: Callable[[float], Any]
    cancel_scope: Callable[[], Any]


def running_loop() -> str | None:
    """The async library running in this thread ("trio", "asyncio"), or None outside any loop."""
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return None


def _trio_move_on_after(seconds: float) -> Any:
    import trio

    return trio.move_on_after(seconds if seconds > 0 else 0.0)  # trio refuses a negative timeout; anyio takes 0


def native() -> Native:
    """Trio's own primitives under Trio (about a quarter to half the cost of anyio's wrappers around them), anyio's
    otherwise: under asyncio, and outside any loop, where anyio's bind to the loop that first uses them (what a
    blocking client's objects made in the caller's thread need)."""
    if running_loop() == "trio":
        import trio

        return Native(trio.Event, trio.current_time, _trio_move_on_after, trio.CancelScope)
    return Native(anyio.Event, anyio.current_time, anyio.move_on_after, anyio.CancelScope)


__all__ = ["Native", "native", "running_loop"]
