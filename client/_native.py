# The event loop's own primitives, looked up once. anyio's Event() and current_time() ask which loop is running on
# every call (a few microseconds each); the producer makes an event per batch and reads the clock per batch, which
# with small batches (keyed records over many partitions, linger_s=0) is a measurable part of a record's cost.
from __future__ import annotations

from typing import Any, Callable

import anyio
import sniffio


def _trio() -> bool:
    """Whether this thread runs Trio (False outside any loop: anyio's objects then bind to a loop when first
    used, which is what a blocking client's objects made in the caller's thread need)."""
    try:
        return sniffio.current_async_library() == "trio"
    except sniffio.AsyncLibraryNotFoundError:
        return False


def primitives() -> tuple[Callable[[], Any], Callable[[], float]]:
    """``(event_factory, clock)`` of the running loop: Trio's own ``Event`` and ``current_time`` under Trio,
    anyio's (which serve asyncio, and a thread with no loop yet) otherwise. Both behave as anyio's: ``set()``,
    ``is_set()``, ``await wait()``; the clock is the loop's, in seconds, as cancel scopes' deadlines are."""
    if _trio():
        import trio

        return trio.Event, trio.current_time
    return anyio.Event, anyio.current_time


def scopes() -> tuple[Callable[[float], Any], Callable[[], Any]]:
    """``(move_on_after, cancel_scope)`` of the running loop: Trio's own under Trio (about half the cost of anyio's
    wrappers around them), anyio's otherwise. ``move_on_after(seconds)`` takes any float (a negative one is 0);
    both give scopes with ``cancel()`` and ``cancelled_caught``."""
    if _trio():
        import trio

        def move_on_after(seconds: float) -> Any:
            return trio.move_on_after(seconds if seconds > 0 else 0.0)

        return move_on_after, trio.CancelScope
    return anyio.move_on_after, anyio.CancelScope


__all__ = ["primitives", "scopes"]
