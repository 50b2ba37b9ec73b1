# What the engine answers a request with, and what it is told about the caller: the whole vocabulary between the
# cores and whatever serves them (the Trio server, a test with literal times). Knows no protocol, no clock, no I/O.
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Hashable


@dataclass(frozen=True, slots=True)
class Context:
    """Who asks and when: ``now_ms`` wall-clock milliseconds since the epoch (record timestamps, commits), ``now``
    monotonic seconds (deadlines, rate limits), the caller's ``client_id`` and peer ``host``."""

    now_ms: int
    now: float
    client_id: str = ""
    host: str = ""


class Outcome:
    """What ``Engine.handle`` returns: ``Answer``, ``Wait`` or ``Offload``. A refused request raises a
    ``MillpondError`` instead, having changed nothing."""

    __slots__ = ()


@dataclass(slots=True)
class Answer(Outcome):
    """The request is answered: ``value`` is a typed answer of the core (a dataclass, ``None`` for an empty one)."""

    value: Any = None


@dataclass(slots=True)
class Wait(Outcome):
    """Not answerable yet. Call ``resume(ctx, timed_out)`` when any of ``keys`` is woken (``timed_out`` False), or
    at ``until`` (monotonic seconds; ``timed_out`` True); ``resume`` returns the next outcome and may raise like
    ``handle``. With no keys this is a plain delay (a shaped produce); with ``until`` infinite it waits for a key
    only (an answer held until its write is durable). ``abandon(ctx)``, if given, is called instead of ``resume``
    when the requester goes away first (a held produce gives back its place); like ``resume`` it may change state
    and wake keys. ``session``: held for as long as the requester may still send (a push subscription, ended by a
    later request of the same caller): once the caller can send no more (its end of stream, even with its
    reading side still open), it is abandoned at once instead of waited for."""

    keys: tuple[Hashable, ...]
    until: float
    resume: Callable[[Context, bool], Outcome]
    abandon: Callable[[Context], None] | None = None
    session: bool = False


@dataclass(slots=True)
class Offload(Outcome):
    """Blocking work (files, fsync): run ``work()`` in a worker thread, then ``resume(ctx, result)`` on the event
    loop, ``result`` being what ``work`` returned or the exception it raised. The core has already reserved what
    the work is for (a topic name, ...), so requests arriving meanwhile see a consistent state."""

    work: Callable[[], Any]
    resume: Callable[[Context, Any], Outcome]


@dataclass(slots=True)
class Job:
    """Background work a core hands out (a segment's fsync after a roll, files of deleted segments): ``work()`` in
    a worker thread, then ``done(result)`` on the event loop (``result`` as for ``Offload``)."""

    work: Callable[[], Any]
    done: Callable[[Any], None] | None = None


NEVER = math.inf


def after(keys: tuple[Hashable, ...], ready: Callable[[], bool], answer: Callable[[], Outcome],
          fail: Callable[[], None] | None = None) -> Outcome:
    """``answer()`` now if ``ready()``, else a ``Wait`` on ``keys`` with no deadline that answers once it is.
    ``fail`` (optional) is called on every wake and may raise to end the wait with an error."""

    def resume(ctx: Context, timed_out: bool) -> Outcome:
        if fail is not None:
            fail()
        return answer() if ready() else Wait(keys, NEVER, resume)

    return answer() if ready() else Wait(keys, NEVER, resume)


__all__ = ["Answer", "Context", "Job", "NEVER", "Offload", "Outcome", "Wait", "after"]
