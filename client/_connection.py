# One TCP connection to the broker under anyio (so Trio and asyncio both work): a reader task that feeds the sans-IO
# core and settles waiting requests by correlation id, a writer task that coalesces queued frames into one send,
# and the hello handshake. Knows nothing of topics, producers or reconnect policy (the Client owns that).
from __future__ import annotations

import math
import os
import socket
import time
from typing import Any, Callable

import anyio
import anyio.lowlevel
from anyio.abc import SocketAttribute, SocketStream, TaskGroup

from millpond.broker.wire.errors import ConnectionClosedError, MillpondError, RequestTimedOutError
from millpond.broker.wire.frames import PIECE_BYTES_MIN, unwritten

from millpond.client._native import native, running_loop
from millpond.client._protocol import ClientProtocol, Response

READ_BYTES = 256 * 1024
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16  # pieces one writev takes
# A broker answers the hello at once (one round trip, no disk); what stays silent longer is something else (a web
# server waiting for its request line), said after this rather than after the whole connect timeout.
HANDSHAKE_TIMEOUT_S = 2.0
# Adaptive busy poll (Connection.awaiting_answer): poll only while at least this share of recent polls ended with
# their answers in (weight of each new poll in that average); otherwise pause, trying one poll every so often
# (seconds: a rate of tries, not a share of requests, so a busy connection spends next to nothing on them).
POLL_HITS_MIN = 0.5
POLL_HITS_WEIGHT = 0.1
POLL_PROBE_S = 0.1


class _Slot:
    __slots__ = ("event", "response", "error")

    def __init__(self, event: Any) -> None:
        self.event = event
        self.response: Response | None = None
        self.error: BaseException | None = None


class _Callback:
    """A request whose answer is handed to ``done(response, error)`` by the reader itself, with no task to wake."""

    __slots__ = ("done",)

    def __init__(self, done: Callable[[Response | None, BaseException | None], None]) -> None:
        self.done = done


def _ignore(response: Response | None, error: BaseException | None) -> None:
    pass


class Connection:
    """A live, handshaken connection. ``request()`` may be called by many tasks at once (pipelining)."""

    def __init__(self, stream: SocketStream, protocol: ClientProtocol, description: str,
                 busy_poll_s: float = 0.0) -> None:
        self._stream = stream
        self.protocol = protocol
        self.description = description
        self._slots: dict[int, _Slot | _Callback] = {}
        self._out: list[bytes | bytearray] = []  # frames, a large batch as a piece of its own
        # the loop's own events and scopes (client._native): an awaited request makes an event and a scope
        loop = native()
        self._new_event, self._move_on_after = loop.event, loop.move_on_after
        self._wake_writer = self._new_event()
        self._sending = False  # a task is writing _out (the writer, or a requester writing its own request)
        self.closed = False
        self.close_reason = ""
        self.closed_event = anyio.Event()
        self.busy_poll_s = busy_poll_s
        self._poll_clock = time.perf_counter  # wall time in seconds: it bounds the poll, whatever the loop's clock
        self._poll_until = 0.0
        self.polling = False  # ``_busy_poll`` keeps the event loop from sleeping now
        self._poll_hits = 1.0  # moving average: 1 when polls end with their answers in, 0 when they run out
        self._poll_probe_at = 0.0  # while polling pauses: the time of its next try (perf_counter)
        self._poll_wakeup: Any = self._new_event() if busy_poll_s > 0 else None
        # Under Trio the socket is ours alone (no transport buffers in front of it): requests are written to it at
        # once with writev and answers read with one recv per wake, so a request costs no task switch and no
        # extra system call. asyncio's transport owns its socket: there every byte goes through the stream.
        self._sock: socket.socket | None = None
        extra = getattr(stream, "extra", None)  # a stream that is no socket stream (tests) has none
        if extra is not None and running_loop() == "trio":
            self._sock = extra(SocketAttribute.raw_socket, None)

    @classmethod
    async def open(cls, tg: TaskGroup, host: str, port: int, client_id: str, timeout_s: float,
                   busy_poll_s: float = 0.0) -> Connection:
        """Connect, start the reader/writer tasks in ``tg`` and complete the handshake.

        Raises ``ConnectionClosedError`` ("cannot connect to HOST:PORT: <reason>": a host name that does not resolve,
        a refused connection, no connection within ``timeout_s`` seconds, or something listening there that does
        not answer the handshake as a millpond broker within ``HANDSHAKE_TIMEOUT_S``) or the hello's error.
        """
        desc = f"{host}:{port}"
        try:
            with anyio.fail_after(timeout_s):
                stream = await anyio.connect_tcp(host, port)
        except TimeoutError:
            raise ConnectionClosedError(f"cannot connect to {desc}: timed out after {timeout_s:g} s",
                                        address=desc) from None
        except OSError as exc:
            raise ConnectionClosedError(f"cannot connect to {desc}: {_reason(exc, host)}", address=desc) from None
        conn = cls(stream, ClientProtocol(client_id), desc, busy_poll_s)
        tg.start_soon(conn._reader)
        tg.start_soon(conn._writer)
        if conn._poll_wakeup is not None:
            tg.start_soon(conn._busy_poll)
        cid, data = conn.protocol.hello()
        handshake_s = min(timeout_s, HANDSHAKE_TIMEOUT_S)
        try:
            response = await conn._exchange(cid, [data], handshake_s)
            conn.protocol.handshake_done(response)
        except (RequestTimedOutError, ConnectionClosedError) as exc:
            # something listens there, but it does not speak millpond (a web server waits silently, others send
            # bytes that are no frame): say so, not just that a request timed out or a frame was too large
            await conn.aclose("handshake failed")
            # A broker out of file descriptors leaves connections in the kernel's backlog, unaccepted: silence too.
            why = (f"no answer to the handshake within {handshake_s:g} s (a millpond broker out of file descriptors "
                   "accepts no connection: its log says so)") if isinstance(exc, RequestTimedOutError) \
                else f"the handshake failed ({exc.message})"
            raise ConnectionClosedError(f"cannot connect to {desc}: {why}; is it a millpond broker?",
                                        address=desc) from None
        except BaseException:
            await conn.aclose("handshake failed")
            raise
        return conn

    async def request(self, api: str, body: dict[str, Any], timeout_s: float,
                      on_late: Callable[[Response], None] | None = None) -> Any:
        """Send one request and wait for its answer body; raises the answer's typed error,
        ``ConnectionClosedError`` if the connection dies first, ``RequestTimedOutError`` after ``timeout_s``.
        ``on_late``: if the wait is cancelled or times out, the answer that still comes is passed to it (from the
        reader, synchronously: it must not raise or block; ``send_later`` may be called) instead of dropped."""
        if self.closed:
            raise ConnectionClosedError(f"connection to {self.description} is closed: {self.close_reason}")
        cid, data = self.protocol.request_parts(api, body)
        return (await self._exchange(cid, data, timeout_s, on_late)).result()

    def send_later(self, api: str, body: dict[str, Any]) -> None:
        """Queue a request whose answer nobody awaits (dropped when it comes) and wake the writer; callable from a
        reader callback. Does nothing on a closed connection."""
        if self.closed:
            return
        cid, data = self.protocol.request_parts(api, body)
        self._slots[cid] = _Callback(_ignore)
        self._out.extend(data)
        self._wake_writer.set()

    def begin(self, api: str, body: dict[str, Any]) -> tuple[int, "_Slot"]:
        """Queue one request now, without waiting (requests begun in order are written in that order); pass the
        result to ``finish``. Raises ``ConnectionClosedError`` if the connection is closed."""
        if self.closed:
            raise ConnectionClosedError(f"connection to {self.description} is closed: {self.close_reason}")
        cid, data = self.protocol.request_parts(api, body)
        return cid, self._queue(cid, data)

    def begin_callback(self, api: str, body: dict[str, Any],
                       done: Callable[[Response | None, BaseException | None], None]) -> int:
        """Queue one request now (as ``begin``); its answer, or the error that ends the connection first, is passed
        to ``done(response, error)`` from the reader task, synchronously: the caller's own timeout calls ``cancel``.
        ``done`` must not raise or block. Returns the correlation id. Raises ``ConnectionClosedError``."""
        if self.closed:
            raise ConnectionClosedError(f"connection to {self.description} is closed: {self.close_reason}")
        cid, data = self.protocol.request_parts(api, body)
        self._slots[cid] = _Callback(done)
        self._out.extend(data)
        return cid

    def cancel(self, cid: int) -> bool:
        """Give up on request ``cid`` begun with ``begin_callback``: its late answer is dropped and ``done`` is
        never called. False if it was already answered (or failed)."""
        if self._slots.pop(cid, None) is None:
            return False
        self.protocol.forget(cid)
        return True

    async def send_queued(self) -> None:
        """Write what ``begin`` queued from this task, now, instead of handing it to the writer task (one task
        switch less on every request's path); a write already in progress takes it along instead."""
        if self._sending or not self._out:
            return
        if self._write_now():
            return
        self._sending = True
        try:
            with anyio.CancelScope(shield=True):  # a request is never left half written
                while self._out and not self.closed:
                    out = self._out
                    self._out = []
                    if len(out) == 1:
                        await self._stream.send(out[0])
                        continue
                    small: list[bytes | bytearray] = []
                    for piece in out:  # large pieces (batches) go as they are: joining would copy them
                        if len(piece) < PIECE_BYTES_MIN:
                            small.append(piece)
                            continue
                        if small:
                            await self._stream.send(b"".join(small))
                            small = []
                        await self._stream.send(piece)
                    if small:
                        await self._stream.send(b"".join(small))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
            with anyio.CancelScope(shield=True):
                await self.aclose(f"write failed: {exc}")
        finally:
            self._sending = False

    def send_queued_nowait(self) -> None:
        """``send_queued`` without waiting: what the socket takes now goes now (Trio); the rest, or everything
        under asyncio, goes from the writer task."""
        if self._sending or not self._out:
            return
        if self._write_now():
            return
        self._wake_writer.set()

    def awaiting_answer(self) -> None:
        """A task now waits for the answer to a request just written: keep the event loop polling for it for up
        to ``busy_poll_s`` (``_busy_poll``), unless answers lately came too late for that to pay (``_poll_hits``).
        Not for requests nobody awaits."""
        poll = self._poll_wakeup
        if poll is None:
            return
        now = self._poll_clock()
        if self._poll_hits < POLL_HITS_MIN:
            if now < self._poll_probe_at:
                return
            # try again now and then: answers may have become quick (another fsync mode, less load)
            self._poll_probe_at = now + POLL_PROBE_S
        self._poll_until = now + self.busy_poll_s
        if not poll.is_set():
            poll.set()

    def _write_now(self) -> bool:
        """Write the queue with writev without waiting (Trio's socket only); True if all of it went. What the socket
        did not take stays queued, in order, for ``send_queued``'s waiting path; a failed socket is met there too."""
        out = self._out
        if self._sock is None or self.closed or len(out) > _IOV_MAX:
            return False
        try:
            n = os.writev(self._sock.fileno(), out)
        except OSError:
            return False
        self._out = unwritten(out, n)
        return not self._out

    async def finish(self, begun: tuple[int, "_Slot"], timeout_s: float) -> Any:
        """Wait for the answer of a ``begin``; raises as ``request``."""
        cid, slot = begun
        return (await self._wait(cid, slot, timeout_s)).result()

    def _queue(self, cid: int, data: list[bytes | bytearray], wake: bool = True) -> "_Slot":
        slot = self._slots[cid] = _Slot(self._new_event())
        self._out.extend(data)
        if wake:
            self._wake_writer.set()
        return slot

    async def _exchange(self, cid: int, data: bytes, timeout_s: float,
                        on_late: Callable[[Response], None] | None = None) -> Response:
        slot = self._queue(cid, data, wake=False)
        await self.send_queued()
        self.awaiting_answer()
        return await self._wait(cid, slot, timeout_s, on_late)

    async def _wait(self, cid: int, slot: "_Slot", timeout_s: float,
                    on_late: Callable[[Response], None] | None = None) -> Response:
        try:
            with self._move_on_after(timeout_s if timeout_s is not None else math.inf):
                await slot.event.wait()
        except BaseException:
            if on_late is not None and slot.response is not None:
                on_late(slot.response)  # answered, but its caller left before taking it (asyncio can do that)
            raise
        finally:
            if self._slots.pop(cid, None) is not None:
                if on_late is None:
                    self.protocol.forget(cid)  # cancelled or timed out: drop the late answer
                else:  # cancelled or timed out: the late answer goes to on_late
                    self._slots[cid] = _Callback(lambda r, error: None if r is None else on_late(r))
        if slot.error is not None:
            raise slot.error
        if slot.response is None:
            raise RequestTimedOutError(f"no answer from {self.description} within {timeout_s:g} s")
        return slot.response

    async def _reader(self) -> None:
        reason = "closed by the broker"
        try:
            receive = self._stream.receive if self._sock is None else self._receive_raw
            feed = self.protocol.receive
            slots = self._slots
            while True:
                data = await receive(READ_BYTES)
                for r in feed(data):
                    slot = slots.pop(r.correlation_id, None)
                    if slot is None:
                        continue
                    if slot.__class__ is _Callback:
                        slot.done(r, None)
                    else:
                        slot.response = r
                        slot.event.set()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        except OSError as exc:
            reason = f"read failed: {exc}"
        except MillpondError as exc:  # the byte stream is broken (oversize frame, garbage): give up on it
            reason = str(exc)
        finally:
            with anyio.CancelScope(shield=True):
                await self.aclose(reason)

    async def _receive_raw(self, max_bytes: int) -> bytes:
        """Trio: wait until readable, then one recv (the stream would try a recv first, and find nothing: the
        reader runs when it has taken every whole answer). Raises ``anyio.EndOfStream`` at the end of stream,
        ``anyio.ClosedResourceError`` once the connection is closed (a closed socket's fd is -1: waiting on it
        would raise ValueError and take the client's task group down)."""
        sock = self._sock
        while True:
            if self.closed:  # closed before this task first ran (a handshake that failed) or by another task
                raise anyio.ClosedResourceError
            await anyio.wait_readable(sock)
            try:
                data = sock.recv(max_bytes)
            except BlockingIOError:
                continue
            except OSError as exc:  # a reset: the broker went away, as the stream says it
                raise anyio.BrokenResourceError from exc
            if not data:
                raise anyio.EndOfStream
            return data

    async def _busy_poll(self) -> None:
        """Keep the event loop polling, not sleeping, while a task awaits an answer, for up to ``busy_poll_s``
        after the request: an answer that comes back within it meets a running process, not one waking from
        sleep (see the broker's ``busy_poll_s``). Yields the CPU at each turn to processes with work to do."""
        checkpoint = anyio.lowlevel.checkpoint
        yield_cpu = os.sched_yield
        while not self.closed:
            self.polling = True
            while self._slots and self._poll_clock() < self._poll_until and not self.closed:
                yield_cpu()  # a process with work to do on this core goes first
                await checkpoint()
            self.polling = False
            # A poll the answers ended is a hit; one that ran out its window (answers slower than the window: a
            # durable write, a long poll with nothing to read, many requests in flight) a miss.
            hit = 1.0 if not self._slots else 0.0
            self._poll_hits += (hit - self._poll_hits) * POLL_HITS_WEIGHT
            wakeup = self._poll_wakeup = self._new_event()
            await wakeup.wait()

    async def _writer(self) -> None:
        while not self.closed:
            await self._wake_writer.wait()
            self._wake_writer = self._new_event()
            await self.send_queued()

    async def aclose(self, reason: str = "closed by the client") -> None:
        """Close the socket and fail every waiting request with a retriable ConnectionClosedError."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        try:
            self._wake_writer.set()
            for cid, err in self.protocol.fail_all(f"connection to {self.description} lost: {reason}"):
                slot = self._slots.pop(cid, None)
                if slot.__class__ is _Callback:
                    slot.done(None, err)
                elif slot is not None:
                    slot.error = err
                    slot.event.set()
            self.closed_event.set()
            if self._poll_wakeup is not None:
                self._poll_wakeup.set()  # the busy poll task ends
        finally:
            await self._stream.aclose()  # whatever a waiter's callback did, the socket is not left open


def _reason(exc: OSError, host: str) -> str:
    """``connection refused`` rather than anyio's "All connection attempts failed" wrapper; a name lookup that
    failed names the host (getaddrinfo's codes are no errno: os.strerror(-2) says "Unknown error -2")."""
    if isinstance(exc, socket.gaierror):
        return f"host name {host!r} does not resolve ({exc.strerror})"
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions and isinstance(cause.exceptions[0], OSError):
        exc = cause.exceptions[0]
    elif isinstance(cause, OSError):
        exc = cause
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return (exc.strerror or str(exc) or type(exc).__name__).lower()
