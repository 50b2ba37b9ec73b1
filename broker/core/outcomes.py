# What the engine answers a request with, and what it is told about the caller: the whole vocabulary between the
# cores and whatever serves them (the Trio server, a test with literal times). Knows no protocol, no clock, no I/O.
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from millpond.broker.wire.errors import MillpondError


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


def all_of(parts: list[Outcome | Exception], combine: Callable[[list[Any]], Any]) -> Outcome:
    """One request made of several (a produce of many batches, as Kafka's ProduceRequest carries many
    partitions): ``parts`` are their outcomes (``Answer`` or ``Wait``) or the exceptions that refused them.
    Answered ``combine(results)`` once every part is settled, ``results[i]`` being part i's answer value or its
    exception. While some wait, it waits on all their keys until the earliest ``until``; a part with keys is
    resumed on every wake (a woken part decides again, so a wake meant for another part is harmless), a pure delay
    only once its time has come. Abandoned: every part still waiting is abandoned."""
    results: list[Any] = [None] * len(parts)
    waiting: dict[int, Wait] = {}
    for i, part in enumerate(parts):
        _settle_part(i, part, results, waiting)
    if not waiting:
        return Answer(combine(results))

    def resume(ctx: Context, timed_out: bool) -> Outcome:
        for i, w in list(waiting.items()):
            due = ctx.now >= w.until
            if due or w.keys:
                del waiting[i]
                try:
                    part: Outcome | Exception = w.resume(ctx, due)
                except MillpondError as exc:  # a part's refusal is its result, not the request's
                    part = exc
                _settle_part(i, part, results, waiting)
        return Answer(combine(results)) if not waiting else _wait()

    def abandon(ctx: Context) -> None:
        for w in waiting.values():
            if w.abandon is not None:
                w.abandon(ctx)

    def _wait() -> Wait:
        keys = tuple(dict.fromkeys(k for w in waiting.values() for k in w.keys))
        return Wait(keys, min(w.until for w in waiting.values()), resume, abandon)

    return _wait()


def _settle_part(i: int, part: Outcome | Exception, results: list[Any], waiting: dict[int, Wait]) -> None:
    if type(part) is Answer:
        results[i] = part.value
    elif type(part) is Wait:
        waiting[i] = part
    elif isinstance(part, Exception):
        results[i] = part
    else:
        raise TypeError(f"all_of takes answers, waits and exceptions, not {part!r}")


__all__ = ["Answer", "Context", "Job", "NEVER", "Offload", "Outcome", "Wait", "after", "all_of"]
