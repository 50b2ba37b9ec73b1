# Gathering: the queue calls of one kind that tasks of one client make in the same turn of the event loop (many
# workers deleting what they received, many tasks sending) leave as one batch request, as the AWS SDK's buffered SQS
# client batches SendMessage, DeleteMessage and ChangeMessageVisibility; unlike it, nothing waits for a batch to
# fill: a gathered request leaves in the next turn of the loop, so a lone call costs no latency. Per-entry answers go
# back to each caller as if its call had been a request of its own. Must not know the broker's insides.
from __future__ import annotations

import copy
from typing import Any, Awaitable, Callable, Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

from millpond.broker.wire.errors import ConnectionClosedError

__all__ = ["Batch", "Gathering"]

E = TypeVar("E")


class Batch(Generic[E]):
    """The calls gathered for one request: their ``key`` (what they share), entries in call order, ``count`` and
    ``size`` (what the bounds count), and ``gone``: positions whose caller stopped waiting (cancelled) before the
    answer came."""

    __slots__ = ("key", "entries", "count", "size", "gone", "done", "results", "error")

    def __init__(self, key: Any) -> None:
        self.key = key
        self.entries: list[E] = []
        self.count = 0
        self.size = 0
        self.gone: set[int] = set()
        self.done = anyio.Event()
        self.results: list[Any] = []
        self.error: BaseException | None = None


class Gathering:
    """A client's gathered calls: at most one open batch per key (the request kind and what must be equal to share
    a request: the queue, a receive's options), dropped from here as soon as its request leaves, so what this holds
    is bounded by the calls waiting to leave."""

    __slots__ = ("_tg", "_open")

    def __init__(self, tg: TaskGroup) -> None:
        self._tg = tg
        self._open: dict[Any, Batch[Any]] = {}

    async def submit(self, key: Any, send: Callable[[Batch[E]], Awaitable[list[Any]]], entry: E, *,
                     count: int = 1, count_max: int, size: int = 0, size_max: int = 0,
                     lost: Callable[[Any], None] | None = None) -> Any:
        """Add ``entry`` to ``key``'s batch leaving next (a new one if it would pass ``count_max`` of what
        ``count`` counts, messages say, or ``size_max`` of what ``size`` counts) and wait for its result.
        ``send(batch)``, run from a task of the client's task group, returns one result per entry: a result that is
        an exception is raised to its caller alone; an exception from ``send`` is raised to every caller of the
        batch. A caller cancelled while it waits stops waiting; its entry was, or will be, sent all the same (as a
        request already written); one cancelled after its result came but before it took it (asyncio can do that)
        has that result handed to ``lost``."""
        b = self._open.get(key)
        if b is None or b.count + count > count_max or b.size + size > size_max:
            b = self._open[key] = Batch(key)
            self._tg.start_soon(self._run, key, b, send)
        i = len(b.entries)
        b.entries.append(entry)
        b.count += count
        b.size += size
        try:
            await b.done.wait()
        except BaseException:
            if not b.done.is_set():
                b.gone.add(i)
            elif lost is not None and b.error is None and not isinstance(b.results[i], BaseException):
                lost(b.results[i])
            raise
        if b.error is not None:
            raise _copy(b.error)
        result = b.results[i]
        if isinstance(result, BaseException):
            raise result
        return result

    async def _run(self, key: Any, b: Batch[Any], send: Callable[[Batch[Any]], Awaitable[list[Any]]]) -> None:
        if self._open.get(key) is b:  # calls from now on gather for the next request
            del self._open[key]
        try:
            b.results = await send(b)
        except Exception as exc:
            b.error = exc
        except BaseException:  # the client is closing: its task group was cancelled
            b.error = ConnectionClosedError("the client closed before the request was answered")
            raise
        finally:
            b.done.set()


def _copy(exc: BaseException) -> BaseException:
    """One error raised in several tasks: each gets its own copy, so their tracebacks do not pile up on one."""
    try:
        return copy.copy(exc)
    except Exception:
        return exc
