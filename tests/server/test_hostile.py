# Connections nobody can knock over (issue 8 item 4), in-process: the connection alone with a stand-in handler
# (exact bounds, per frame), then the real broker over in-memory streams in virtual time (timeouts, garbage, slow
# readers) and over loopback TCP where the socket itself is under test (a peer resetting mid-answer, accept errors).
from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from typing import Any

import msgpack
import pytest
import trio
import trio.testing

from millpond.broker.server.connection import Connection, ConnectionLimits
from millpond.broker.server.embedded import open_broker
from millpond.broker.server.listener import Listener, connections_budget, is_loopback
from millpond.broker.wire import errors
from millpond.broker.wire.batch import encode_batch
from millpond.broker.wire.frames import FrameDecoder, decode_response, encode_frame, encode_request

from serverkit import RawClient, start_harness

MB = 1024 * 1024


# -- the connection alone ------------------------------------------------------------------------------------------
class StandIn:
    """A handler that answers each frame with ``answer(body)`` pieces, or parks it (``park=True``)."""

    def __init__(self, answer: Any = None, *, park: bool = False) -> None:
        self.answer = answer or (lambda body: [body])
        self.park = park
        self.frames: list[bytes] = []
        self.parked: list[bytes] = []
        self.closed = 0
        self.eofs = 0

    def new_decoder(self, limits: ConnectionLimits) -> FrameDecoder:
        return FrameDecoder(limits.frame_bytes_max)

    def on_frame(self, conn: Connection, body: bytes | memoryview) -> None:
        body = bytes(body)  # the connection's view of its buffer is valid only during this call
        self.frames.append(body)
        if self.park:
            self.parked.append(body)
        else:
            conn.send(self.answer(body))

    def on_closed(self, conn: Connection) -> None:
        self.closed += 1

    def on_eof(self, conn: Connection) -> None:
        self.eofs += 1

    def on_frames_done(self, conn: Connection) -> None:
        pass

    def frame_too_large(self, conn: Connection, exc: errors.FrameTooLargeError) -> list[bytes]:
        return [b"TOO-LARGE"]


class Recording(trio.abc.HalfCloseableStream):
    """A stream that counts reads and keeps what was passed to each send."""

    def __init__(self, inner: trio.abc.Stream, fail_send: BaseException | None = None) -> None:
        self.inner = inner
        self.receives = 0
        self.sent: list[Any] = []
        self.fail_send = fail_send

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        self.receives += 1
        return await self.inner.receive_some(max_bytes)

    async def send_all(self, data: Any) -> None:
        if self.fail_send is not None:
            raise self.fail_send
        self.sent.append(data)
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


def frames(n: int, size: int = 10) -> bytes:
    """``n`` raw frames (length prefix, then ``size`` + 6 bytes starting with the frame's number)."""
    return b"".join(struct.pack(">I", size + 6) + b"%06d" % i + b"x" * size for i in range(n))


async def start(nursery: trio.Nursery, handler: StandIn, pair: Any = trio.testing.memory_stream_pair,
                **limits: Any) -> tuple[Connection, trio.abc.Stream, Recording]:
    client, server = pair()
    rec = Recording(server)
    conn = Connection(rec, "127.0.0.1:5000", handler, limits=ConnectionLimits(**limits))
    nursery.start_soon(conn.run)
    return conn, client, rec


async def test_frames_are_taken_one_by_one_and_reading_stops_at_requests_in_flight_max(nursery):
    handler = StandIn(park=True)
    conn, client, rec = await start(nursery, handler, requests_in_flight_max=4)
    await client.send_all(frames(100))  # one write, one read: 100 frames in the broker's buffer
    await trio.testing.wait_all_tasks_blocked()
    assert len(handler.frames) == 4  # per frame, not per read
    assert conn.statistics().in_flight == 4 and conn.statistics().buffered_bytes > 90 * 14
    reads = rec.receives
    await client.send_all(frames(10))
    await trio.testing.wait_all_tasks_blocked()
    assert rec.receives == reads and len(handler.frames) == 4  # not read while full
    conn.send([b"a"])
    await trio.testing.wait_all_tasks_blocked()
    assert len(handler.frames) == 5
    for _ in range(105):
        conn.send([b"a"])
    await trio.testing.wait_all_tasks_blocked()
    assert len(handler.frames) == 110 and [f[:6] for f in handler.frames[:3]] == [b"000000", b"000001", b"000002"]


async def test_a_reader_that_never_reads_costs_at_most_the_outbox_plus_one_answer(nursery):
    big = memoryview(os.urandom(MB))
    handler = StandIn(lambda body: [body[:6], big])
    conn, client, rec = await start(nursery, handler, trio.testing.lockstep_stream_pair, outbox_bytes_max=4 * MB)
    sending = trio.CancelScope()

    async def pipeline() -> None:
        with sending:
            await client.send_all(frames(300))

    nursery.start_soon(pipeline)
    await trio.testing.wait_all_tasks_blocked()
    stats = conn.statistics()
    # 4 MB of answers queued, one answer past it, and the one the writer is blocked on
    assert stats.unsent_bytes <= 4 * MB + (MB + 6)
    assert len(handler.frames) <= 6 and rec.receives <= 2
    assert stats.buffered_bytes <= ConnectionLimits().receive_bytes
    # once the peer reads, every answer comes, in order
    got = bytearray()
    while len(got) < 300 * (MB + 6):
        got += await client.receive_some(4 * MB)
        assert conn.statistics().unsent_bytes <= 5 * MB + 6
    assert len(handler.frames) == 300
    assert [bytes(got[i * (MB + 6): i * (MB + 6) + 6]) for i in (0, 1, 299)] == [b"000000", b"000001", b"000299"]
    sending.cancel()


async def test_parked_answers_are_built_only_when_there_is_room_first_in_first_out(nursery):
    handler = StandIn(park=True)
    conn, client, _ = await start(nursery, handler, trio.testing.lockstep_stream_pair, outbox_bytes_max=2 * MB)
    await client.send_all(frames(10))
    await trio.testing.wait_all_tasks_blocked()
    built: list[int] = []

    def answer(i: int) -> None:
        built.append(i)
        conn.send([b"%06d" % i, memoryview(bytes(MB))])

    for i in range(10):  # every parked request wakes at once (a produce arrived)
        conn.when_room(lambda i=i: answer(i))
    assert built == [0, 1] and conn.statistics().parked_answers == 8  # no room: the rest are not even built
    await trio.testing.wait_all_tasks_blocked()
    assert len(built) <= 4
    got = bytearray()
    while len(got) < 10 * (MB + 6):
        got += await client.receive_some(MB)
    assert built == list(range(10))
    await conn.drained()
    assert conn.statistics().unsent_bytes == 0 and conn.in_flight == 0


async def test_large_pieces_are_sent_as_they_are_and_small_answers_in_one_send(nursery):
    big = memoryview(bytes(range(256)) * 1024)
    handler = StandIn(lambda body: [b"head", big, b"tail"] if body.startswith(b"000009") else [body[:6]])
    conn, client, rec = await start(nursery, handler)
    await client.send_all(frames(10))
    await trio.testing.wait_all_tasks_blocked()
    assert rec.sent[0] == b"".join(b"%06d" % i for i in range(9)) + b"head"  # nine small answers: one send
    assert rec.sent[1] is big  # the stored bytes themselves, not a copy
    assert rec.sent[2] == b"tail"


@pytest.mark.parametrize("failure", [trio.BrokenResourceError("reset"), ConnectionResetError(errno.ECONNRESET, "x"),
                                     trio.ClosedResourceError(), RuntimeError("a bug")])
async def test_an_error_in_the_writer_ends_that_connection_only(nursery, failure):
    handler = StandIn()
    client, server = trio.testing.memory_stream_pair()
    conn = Connection(Recording(server, fail_send=failure), "p:1", handler, limits=ConnectionLimits())
    async with trio.open_nursery() as inner:  # would raise (as an ExceptionGroup) if run() let anything out
        inner.start_soon(conn.run)
        await client.send_all(frames(3))
    assert conn.closed and handler.closed == 1


async def test_an_error_in_the_handler_ends_that_connection_only(nursery, caplog):
    handler = StandIn(lambda body: 1 / 0)
    client, server = trio.testing.memory_stream_pair()
    conn = Connection(server, "p:1", handler, limits=ConnectionLimits())
    async with trio.open_nursery() as inner:
        inner.start_soon(conn.run)
        await client.send_all(frames(1))
    assert handler.closed == 1 and "ended by an error" in caplog.text
    assert await client.receive_some(10) == b""


async def test_an_oversize_frame_gets_the_error_then_the_connection_closes(nursery):
    handler = StandIn(lambda body: [body[:6]])
    conn, client, _ = await start(nursery, handler, frame_bytes_max=1000)
    await client.send_all(frames(2) + struct.pack(">I", 1001) + frames(2))
    got = b""
    while data := await client.receive_some(1000):
        got += data
    assert got == b"000000000001TOO-LARGE"  # the answers before it, the error, then the end: nothing after it
    await trio.testing.wait_all_tasks_blocked()
    assert len(handler.frames) == 2 and handler.closed == 1


async def test_close_after_sends_what_was_queued_then_closes(nursery):
    handler = StandIn()
    conn, client, _ = await start(nursery, handler)
    handler.answer = lambda body: conn.close_after([b"bye"]) or []
    await client.send_all(frames(1))
    got = b""
    while data := await client.receive_some(1000):
        got += data
    assert got == b"bye" and conn.closed


async def test_drained_waits_for_answers_to_be_sent(nursery):
    handler = StandIn(park=True)
    conn, client, _ = await start(nursery, handler, trio.testing.lockstep_stream_pair)
    await client.send_all(frames(2))
    await trio.testing.wait_all_tasks_blocked()
    done = trio.Event()

    async def wait() -> None:
        await conn.drained()
        done.set()

    nursery.start_soon(wait)
    conn.send([b"one"])
    await trio.testing.wait_all_tasks_blocked()
    assert not done.is_set()
    conn.send([b"two"])
    assert not done.is_set()  # queued, not sent: the peer has not read it
    got = b""
    while len(got) < 6:
        got += await client.receive_some(10)
    assert got == b"onetwo"
    await done.wait()


async def test_a_peer_that_half_closes_still_gets_its_answers(nursery):
    handler = StandIn(park=True)
    conn, client, _ = await start(nursery, handler)
    await client.send_all(frames(1))
    await client.send_eof()
    await trio.testing.wait_all_tasks_blocked()
    assert not conn.closed and handler.eofs == 1  # told at once, so it can end what only the peer could end
    conn.send([b"late"])
    assert await client.receive_some(10) == b"late"
    assert await client.receive_some(10) == b""
    await trio.testing.wait_all_tasks_blocked()
    assert handler.closed == 1


async def test_no_handshake_closes_the_connection_after_handshake_timeout(nursery, autojump_clock):
    handler = StandIn()
    conn, client, _ = await start(nursery, handler, handshake_timeout_s=10, idle_timeout_s=0)
    start_time = trio.current_time()
    await client.send_all(frames(1))  # requests are not a handshake until the codec says so
    assert await client.receive_some(100) == b"000000" + b"x" * 10
    assert await client.receive_some(100) == b""
    assert trio.current_time() - start_time == pytest.approx(10)


async def test_idle_timeout_counts_from_the_last_answer_and_pauses_while_the_broker_owes_one(nursery, autojump_clock):
    handler = StandIn(park=True)
    conn, client, _ = await start(nursery, handler, handshake_timeout_s=0, idle_timeout_s=100)
    t0 = trio.current_time()
    await client.send_all(frames(1))
    await trio.sleep(250)  # a long poll: the broker owes the answer, the peer is not idle
    assert not conn.closed
    conn.send([b"answer"])
    assert await client.receive_some(100) == b"answer"
    assert await client.receive_some(100) == b""
    assert trio.current_time() - t0 == pytest.approx(350)


async def test_a_peer_that_stops_reading_is_closed_after_idle_timeout(nursery, autojump_clock):
    handler = StandIn(lambda body: [bytes(MB)])
    conn, client, _ = await start(nursery, handler, trio.testing.lockstep_stream_pair, handshake_timeout_s=0,
                                  idle_timeout_s=60)
    t0 = trio.current_time()
    with trio.move_on_after(1):
        await client.send_all(frames(100))
    while not conn.closed:
        await trio.sleep(1)
    assert trio.current_time() - t0 == pytest.approx(60, abs=1.01)
    assert handler.closed == 1


async def test_idle_timeout_zero_is_off(nursery, autojump_clock):
    handler = StandIn()
    conn, client, _ = await start(nursery, handler, handshake_timeout_s=0, idle_timeout_s=0)
    await trio.sleep(10 * 24 * 3600)
    await client.send_all(frames(1))
    assert await client.receive_some(100) == b"000000" + b"x" * 10


# -- the broker over in-memory streams -----------------------------------------------------------------------------
async def test_broker_closes_a_connection_that_never_says_hello(nursery, tmp_path, autojump_clock):
    h = await start_harness(nursery, tmp_path, handshake_timeout_s=10)
    silent = await h.connect(hello=False)
    talker = await h.connect(hello=False)
    t0 = trio.current_time()
    await talker.ok("hello", {"protocol_version": 1, "client_id": "ok"})
    with pytest.raises(EOFError):
        await silent.receive()
    assert trio.current_time() - t0 == pytest.approx(10)
    await trio.sleep(100)
    assert await talker.ok("list_topics", {}) == {"topics": []}  # a handshaken connection stays
    await h.broker.shutdown()


async def test_broker_closes_idle_connections_and_keeps_long_polls(nursery, tmp_path, autojump_clock):
    h = await start_harness(nursery, tmp_path, idle_timeout_s=120)
    polling = await h.connect()
    await polling.ok("create_topic", {"name": "t"})  # before the idle connection opens: its clock starts below
    idle = await h.connect()
    t0 = trio.current_time()
    await polling.send("fetch", {"partitions": [["t", 0, 0]], "max_wait_ms": 200_000})
    with pytest.raises(EOFError):
        await idle.receive()
    assert trio.current_time() - t0 == pytest.approx(120, abs=0.01)
    _, code, answer = await polling.receive()  # the long poll outlived the idle timeout: it was waiting on us
    assert code == 0 and trio.current_time() - t0 == pytest.approx(200, abs=0.01)
    assert await polling.ok("list_topics", {}) == {"topics": ["t"]}
    await h.broker.shutdown()


GARBAGE = [
    b"\x00\x00\x00\x01\xc1",  # msgpack's never-used byte
    b"\x00\x00\x00\x05\xdf\xff\xff\xff\xff",  # a map announcing 4 billion entries
    b"\x00\x00\x00\x05\xdd\xff\xff\xff\xff",  # an array announcing 4 billion items
    b"\x00\x00\x00\x00",  # an empty frame
    encode_frame([1, "produce", {"topic": 5, "partition": "0", "batch": 7}]),
    encode_frame([2, "produce", {"topic": "t", "partition": 0, "batch": b"\x00" * 100}]),
    encode_frame([3, "fetch", {"partitions": "t"}]),
    encode_frame([4, "fetch", {"partitions": [["t", 0, 0]], "max_bytes": -1, "max_wait_ms": "x"}]),
    encode_frame([5, "fetch", {"partitions": [["t", 0, 2**63]]}]),
    encode_frame([6, "hello", {"protocol_version": 1}]),
    encode_frame([7, "produce", {"topic": "t", "partition": 2**40, "batch": b""}]),
    encode_frame([2**64 - 1, "list_topics", {}]),
    encode_frame([8, "create_topic", {"name": {"a": 1}, "config": [1, 2]}]),
    encode_frame([9, "x" * 100_000, {}]),
    b"\x00\x00\x00\x03" + msgpack.packb([1, 2], use_bin_type=True) + b"\x00",
]


async def test_garbage_and_wrong_types_never_disturb_other_connections(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path)
    good = await h.connect()
    await good.ok("create_topic", {"name": "t"})
    for garbage in GARBAGE:
        bad = await h.connect()
        await bad.send_bytes(garbage)
        try:
            await bad.receive()  # an error answer (or an answer: a huge correlation id is still one)
        except EOFError:
            pass  # closing the connection is a fine answer to garbage
        assert await good.ok("list_topics", {}) == {"topics": ["t"]}
    # garbage before the handshake, and random bytes
    for seed in range(20):
        bad = await h.connect(hello=False)
        await bad.send_bytes(struct.pack(">I", 64) + bytes((seed * 7 + i * 13) % 256 for i in range(64)))
        with trio.move_on_after(5):
            try:
                await bad.receive()
            except (EOFError, errors.MillpondError):
                pass
    assert await good.ok("list_topics", {}) == {"topics": ["t"]}
    await h.broker.shutdown()


async def test_oversize_frames_close_only_their_connection(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path, frame_bytes_max=64 * 1024, batch_bytes_max=32 * 1024)
    good = await h.connect()
    for length in (64 * 1024 + 1, 2**31, 2**32 - 1):
        bad = await h.connect()
        await bad.send_bytes(struct.pack(">I", length) + b"\x00" * 1000)
        _, code, _ = await bad.receive()
        assert code == errors.FrameTooLargeError.code
        with pytest.raises(EOFError):
            await bad.receive()
        assert await good.ok("list_topics", {}) == {"topics": []}
    await h.broker.shutdown()


async def lockstep_client(h: Any) -> RawClient:
    client_side, server_side = trio.testing.lockstep_stream_pair()
    h.nursery.start_soon(h.broker.serve_stream, server_side)
    client = RawClient(client_side)
    await client.ok("hello", {"protocol_version": 1, "client_id": "slow"})
    return client


def one_mb_batch(i: int = 0) -> bytes:
    return encode_batch([(1_700_000_000_000, None, bytes([i % 256]) * (MB - 200), None)])


async def test_a_slow_reader_stops_being_read_and_others_are_served(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path, connection_outbox_bytes_max=4 * MB)
    other = await h.connect()
    await other.ok("create_topic", {"name": "t"})
    for i in range(8):
        await other.ok("produce", {"topic": "t", "partition": 0, "batch": one_mb_batch(i)})
    slow = await lockstep_client(h)
    fetches = b"".join(encode_request(100 + i, "fetch", {"partitions": [["t", 0, i % 8]], "max_bytes": MB,
                                                         "max_wait_ms": 0}) for i in range(2000))
    sending = trio.CancelScope()

    async def pipeline() -> None:
        with sending:
            await slow.stream.send_all(fetches)

    nursery.start_soon(pipeline)
    await trio.testing.wait_all_tasks_blocked()
    [conn] = [c for c in h.broker.connections if c.statistics().unsent_bytes]
    stats = conn.statistics()
    assert stats.unsent_bytes <= 4 * MB + 2 * (MB + 1024)  # the outbox, one answer past it, the one being sent
    assert stats.frames <= 1 + 8  # hello + the fetches whose answers fit: the rest were not even read
    for i in range(20):  # meanwhile everyone else is served
        await other.ok("produce", {"topic": "t", "partition": 0, "batch": encode_batch([(1, None, b"v", None)])})
        assert (await other.ok("fetch", {"partitions": [["t", 0, 8 + i]], "max_wait_ms": 0}))["partitions"][0][2] == 0
    sending.cancel()
    await slow.stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert conn.closed
    await h.broker.shutdown()


# -- loopback TCP --------------------------------------------------------------------------------------------------
def hello_and_fetches(n: int, topic: str = "t", max_bytes: int = MB) -> bytes:
    out = [encode_request(1, "hello", {"protocol_version": 1, "client_id": "hostile"})]
    out += [encode_request(2 + i, "fetch", {"partitions": [[topic, 0, 0]], "max_bytes": max_bytes, "max_wait_ms": 0})
            for i in range(n)]
    return b"".join(out)


async def test_a_peer_resetting_after_pipelined_fetches_does_not_stop_open_broker(tmp_path):
    # The reproduction: one 1 MB record; hello and 50 fetches of it, 50 ms, close. It used to end the broker.
    async with open_broker(tmp_path / "d", fsync="never") as b:
        c = await trio.open_tcp_stream(b.host, b.port)
        raw = RawClient(c)
        await raw.ok("hello", {"protocol_version": 1, "client_id": "ok"})
        await raw.ok("create_topic", {"name": "t"})
        await raw.ok("produce", {"topic": "t", "partition": 0, "batch": one_mb_batch()})
        for round_ in range(10):
            hostile = await trio.open_tcp_stream(b.host, b.port)
            await hostile.send_all(hello_and_fetches(50))
            if round_ % 2:
                await hostile.receive_some(100)  # reset mid-answer
            await trio.sleep(0.05)
            hostile.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
            await hostile.aclose()
            assert await raw.ok("list_topics", {}) == {"topics": ["t"]}
        with trio.fail_after(10):
            while b.statistics().connections > 1:
                await trio.sleep(0.01)
        await c.aclose()


async def test_accept_errors_are_logged_and_survived(autojump_clock, caplog):
    class Flaky:
        """A listening socket whose accept runs out of descriptors a few times, then takes a peer."""

        def __init__(self) -> None:
            self.socket = socket.socket()
            self.failures = [errno.EMFILE, errno.ENFILE, errno.EMFILE]
            self.accepted = trio.Event()

        async def accept(self) -> Any:
            await trio.lowlevel.checkpoint()
            if self.failures:
                raise OSError(self.failures.pop(0), os.strerror(errno.EMFILE))
            if self.accepted.is_set():
                await trio.sleep_forever()
            self.accepted.set()
            a, b = trio.testing.memory_stream_pair()
            return a

        async def aclose(self) -> None:
            self.socket.close()

    flaky = Flaky()
    flaky.socket.bind(("127.0.0.1", 0))
    listener = Listener([flaky], connections_max=10)  # type: ignore[list-item]
    handled: list[str] = []

    async def handle(stream: Any, peer: str) -> None:
        handled.append(peer)

    caplog.set_level(logging.WARNING, "millpond.server")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(listener.serve, handle, nursery)
        t0 = trio.current_time()
        await flaky.accepted.wait()
        assert trio.current_time() - t0 == pytest.approx(0.3)  # three short back-offs
        await trio.testing.wait_all_tasks_blocked()
        listener.stop()
    assert handled == ["?"] and listener.accept_errors == 3
    assert caplog.text.count("accept failed") == 1  # one line for the whole episode
    assert "Too many open files" in caplog.text


async def test_connections_max_refuses_with_a_slot_kept_for_loopback(tmp_path):
    async with open_broker(tmp_path / "d", fsync="never", connections_max=3) as b:
        held = [await trio.open_tcp_stream(b.host, b.port) for _ in range(3)]
        for s in held:
            await s.send_all(encode_request(1, "hello", {"protocol_version": 1, "client_id": "x"}))
            assert decode_response(next(FrameDecoder().feed(await s.receive_some(1000))))[1] == 0
        extra = await trio.open_tcp_stream(b.host, b.port)
        with trio.fail_after(5):
            assert await extra.receive_some(10) == b""  # refused: closed at once
        await held.pop().aclose()
        with trio.fail_after(5):
            while True:  # the slot is free again once the broker has seen the close
                s = await trio.open_tcp_stream(b.host, b.port)
                await s.send_all(encode_request(1, "hello", {"protocol_version": 1, "client_id": "x"}))
                try:
                    data = await s.receive_some(1000)
                except trio.BrokenResourceError:
                    data = b""
                if data:
                    break
                await s.aclose()
                await trio.sleep(0.01)
        for s in held + [extra, s]:
            await s.aclose()


def test_connections_budget_keeps_descriptors_for_files():
    assert connections_budget(1024, 20000, 256) == 1024
    assert connections_budget(1024, 1024, 256) == 768
    assert connections_budget(1024, 64, 256) == 32  # never more than half the limit kept
    assert connections_budget(1024, 64, 0) == 64
    assert connections_budget(1024, None, 256) == 1024  # no limit
    assert connections_budget(5, 2, 256) == 1
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("10.0.0.1")
    assert not is_loopback("memory")


async def test_an_answer_from_another_task_leaves_at_once_and_a_full_socket_keeps_the_order(nursery):
    """An answer made outside the connection's reader (a fetch woken by another connection's produce) is written
    by the caller at once, with no hop to the writer task; what the socket does not take waits for the writer,
    and every byte arrives once, in order."""
    import socket

    server_sock, client_sock = socket.socketpair()
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    handler = StandIn(park=True)
    conn = Connection(trio.SocketStream(trio.socket.from_stdlib_socket(server_sock)), "127.0.0.1:5000", handler,
                      limits=ConnectionLimits())
    nursery.start_soon(conn.run)
    client_sock.sendall(frames(3))
    await trio.testing.wait_all_tasks_blocked()
    assert len(handler.frames) == 3
    conn.send([b"now"])
    client_sock.setblocking(False)
    assert client_sock.recv(100) == b"now"  # written by the call itself: no task ran in between
    big = [bytes([i]) * 300_000 for i in range(1, 9)]  # far more than the socket takes at once
    conn.send(big)
    conn.send([b"last"])
    assert conn.statistics().unsent_bytes > 0  # the rest is the writer's
    client_sock.setblocking(True)
    want = b"".join(big) + b"last"
    got = bytearray()
    while len(got) < len(want):
        got += await trio.to_thread.run_sync(client_sock.recv, 1 << 20)
    assert got == want and conn.statistics().unsent_bytes == 0
    client_sock.close()
