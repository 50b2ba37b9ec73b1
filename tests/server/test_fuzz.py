# A fuzzer (hypothesis) over the frame decoder and every request kind of the native protocol (frontends/native.py's
# REQUESTS): random, truncated, oversized and wrongly typed input, and produce batches whose CRC is forged to match
# damaged contents, sent over loopback TCP to an in-process broker (open_broker in a thread of this process). For
# every input: the broker answers each whole frame (an answer or an error) or closes that connection, never an
# internal error; it answers a request sent after the input (no hang); another connection's produce and fetch round
# trip still works; and everything stored decodes (records and CRCs) at dense offsets.
from __future__ import annotations

import dataclasses
import itertools
import logging
import socket
import struct
import threading
import time
import types
import typing
from pathlib import Path
from typing import Any, Iterator

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from millpond.broker.server.embedded import open_broker
from millpond.broker.server.frontends.native import REQUESTS
from millpond.broker.wire.batch import CRC_START, decode_records, encode_batch
from millpond.broker.wire.errors import FrameTooLargeError, InvalidRequestError
from millpond.broker.wire.frames import FrameDecoder, decode_request, decode_response, encode_frame, encode_request

from crc32c import crc32c

FRAME_BYTES_MAX = 256 * 1024
ROUND_TRIP_TOPIC = "roundtrip-never-fuzzed"  # no strategy below spells it: the fuzzer cannot delete it
NAMES = ["t", "q", "q-dlq", "g", "fuzz", ""]  # topics, queues and groups that exist (or do not), so requests go deep
SENTINEL_CID = 2**40
ANSWER_WAIT_S = 10.0


# -- the broker, in a thread of this process -------------------------------------------------------------------------
class InProcessBroker:
    """``open_broker`` run by ``trio.run`` in a thread; ERROR log lines with a traceback (an internal error
    answered UNKNOWN, a connection ended by a bug) are kept in ``internal_errors``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = 0
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.internal_errors: list[str] = []
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._handler = _Collect(self.internal_errors)

    def __enter__(self) -> "InProcessBroker":
        logging.getLogger("millpond").addHandler(self._handler)
        self._thread.start()
        assert self.ready.wait(30), self.failure
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)
        logging.getLogger("millpond").removeHandler(self._handler)

    def _run(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with open_broker(self.data_dir, fsync="never", frame_bytes_max=FRAME_BYTES_MAX,
                                   batch_bytes_max=64 * 1024, handshake_timeout_s=5, idle_timeout_s=30) as b:
                self.port = b.port
                self.ready.set()
                await self._stop.wait()

        try:
            trio.run(main)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc
            self.ready.set()


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.into.append(self.format(record))


class Peer:
    """A blocking raw-protocol connection."""

    def __init__(self, port: int, hello: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WAIT_S)
        self.decoder = FrameDecoder(1 << 30)
        self.ids = itertools.count(1)
        if hello:
            assert self.call("hello", {"protocol_version": 1, "client_id": "fuzz"})[0] == 0

    def frames(self) -> Iterator[tuple[int, int, Any]]:
        """Answers as they come, until the broker closes the connection."""
        while True:
            for frame in iter(self.decoder.next_frame, None):
                yield decode_response(frame)
            data = self.sock.recv(1 << 20)
            if not data:
                return
            self.decoder.feed(data)

    def call(self, api: str, body: dict[str, Any]) -> tuple[int, Any]:
        cid = next(self.ids)
        self.sock.sendall(encode_request(cid, api, body))
        for rcid, code, answer in self.frames():
            if rcid == cid:
                return code, answer
        raise ConnectionError(f"{api}: the broker closed the connection")

    def ok(self, api: str, body: dict[str, Any]) -> Any:
        code, answer = self.call(api, body)
        assert code == 0, (api, answer)
        return answer

    def close(self) -> None:
        self.sock.close()


# -- strategies ----------------------------------------------------------------------------------------------------
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.integers(-3, 300), st.floats(allow_nan=True),
    st.text(max_size=20), st.binary(max_size=64), st.sampled_from(NAMES))
ANY = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8) | st.integers(-5, 5), inner, max_size=4), max_leaves=12)


def batch_bytes() -> st.SearchStrategy[bytes]:
    """A valid batch, or one with bytes changed, cut or added after its header and its CRC forged to match."""
    records = st.lists(st.tuples(st.integers(0, 2**41), st.none() | st.binary(max_size=8), st.binary(max_size=40),
                                 st.none() | st.dictionaries(st.text(max_size=4), st.binary(max_size=4), max_size=2)),
                       min_size=1, max_size=5)

    @st.composite
    def forged(draw: Any) -> bytes:
        blob = bytearray(encode_batch(draw(records)))
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(["flip", "cut", "add", "count"]))
            if kind == "flip" and len(blob) > CRC_START:
                at = draw(st.integers(CRC_START, len(blob) - 1))
                blob[at] = draw(st.integers(0, 255))
            elif kind == "cut" and len(blob) > CRC_START + 1:
                del blob[draw(st.integers(CRC_START + 1, len(blob) - 1)):]
            elif kind == "add":
                blob += draw(st.binary(min_size=1, max_size=16))
            elif kind == "count" and len(blob) >= 61:  # records count (the last header field), off by some
                n = struct.unpack_from(">i", blob, 57)[0] + draw(st.integers(-2, 2))
                struct.pack_into(">i", blob, 57, n)
        if draw(st.booleans()):  # the batch length field made to match what is there, or left as it was
            struct.pack_into(">i", blob, 8, len(blob) - 12)
        struct.pack_into(">I", blob, 17, crc32c(memoryview(blob)[CRC_START:]))  # the forged CRC
        return bytes(blob)

    return forged() | st.binary(max_size=120)


def _typed(tp: Any, wire_ms: bool = False) -> st.SearchStrategy[Any]:
    """Values of type ``tp`` as the wire spells them (``wire_ms``: a core's seconds field, integer ms)."""
    if wire_ms:
        return st.integers(-5, 200) | st.none()
    if tp is Any:
        return ANY
    if tp is int:
        return st.sampled_from([0, 1, 2]) | st.integers(-3, 300) | st.integers(-(2**63), 2**64 - 1)
    if tp is str:
        return st.sampled_from(NAMES) | st.text(max_size=30)
    if tp is bytes:
        return batch_bytes()
    if tp is bool:
        return st.booleans()
    if tp is float:
        return st.floats(allow_nan=True)
    if tp is type(None):
        return st.none()
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([_typed(a) for a in args])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is tuple:
        return st.lists(_typed(args[0]), max_size=4)
    if origin is dict:
        return st.dictionaries(_typed(args[0]), _typed(args[1]), max_size=3)
    if dataclasses.is_dataclass(tp):
        return body_of(tp)
    if isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields"):
        hints = typing.get_type_hints(tp)
        return st.tuples(*[_typed(hints[f]) for f in tp._fields]).map(list)
    return ANY


def body_of(cls: type, strict: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """A map for request class ``cls``: each field present or missing, of its type (``strict``) or now and then of
    any type, plus keys the class does not have."""
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        ms = f.name.endswith("_s")
        wire = f.name[:-2] + "_ms" if ms else f.name
        typed = _typed(hints[f.name], ms)
        fields.append((wire, typed if strict else st.one_of(typed, typed, typed, ANY)))

    @st.composite
    def build(draw: Any) -> dict[str, Any]:
        body = {}
        for wire, values in fields:
            if draw(st.integers(0, 9)) > 0:  # most fields present
                body[wire] = draw(values)
        if draw(st.integers(0, 5)) == 0:
            body.update(draw(st.dictionaries(st.text(max_size=8), ANY, max_size=2)))
        return body

    return build()


REQUEST = st.sampled_from(sorted(REQUESTS)).flatmap(
    lambda api: st.tuples(st.integers(0, 2**64 - 1) | st.integers(1, 100), st.just(api),
                          body_of(REQUESTS[api], strict=True) | body_of(REQUESTS[api])))
PRODUCE = st.one_of(  # forged batches to partitions that exist, alone or several in one request
    st.fixed_dictionaries({"topic": st.just("t"), "partition": st.integers(0, 1), "batch": batch_bytes()}).map(
        lambda body: [1, "produce", body]),
    st.lists(st.tuples(st.just("t"), st.integers(0, 1), batch_bytes()).map(list), min_size=1, max_size=3).map(
        lambda rows: [2, "produce_batches", {"batches": rows}]))
ENVELOPE = st.one_of(  # envelopes that are not [correlation id, api, map]
    st.tuples(ANY, ANY, ANY).map(list), ANY, st.tuples(st.integers(0, 2**64 - 1), st.text(max_size=40), ANY).map(list),
    st.just([1, "hello", {"protocol_version": 1}]))


@st.composite
def fuzz_input(draw: Any) -> tuple[str, bool, bytes]:
    """``(kind, hello first?, bytes)``; kinds: requests (typed bodies), batches (produce requests of forged
    batches to partitions that exist), envelopes, raw (random bytes in a frame),
    truncated (a frame cut short), oversized (a length prefix past frame_bytes_max), noise (any bytes)."""
    kind = draw(st.sampled_from(["requests", "requests", "requests", "batches", "envelopes", "raw", "truncated",
                                 "oversized", "noise"]))
    hello = draw(st.integers(0, 7)) > 0
    if kind == "requests":
        data = b"".join(encode_frame(list(r)) for r in draw(st.lists(REQUEST, min_size=1, max_size=4)))
    elif kind == "batches":
        data = b"".join(encode_frame(r) for r in draw(st.lists(PRODUCE, min_size=1, max_size=3)))
    elif kind == "envelopes":
        data = b"".join(encode_frame(e) for e in draw(st.lists(ENVELOPE, min_size=1, max_size=3)))
    elif kind == "raw":
        data = b"".join(struct.pack(">I", len(b)) + b for b in draw(st.lists(st.binary(max_size=200), min_size=1,
                                                                             max_size=3)))
    elif kind == "truncated":
        whole = encode_frame(list(draw(REQUEST)))
        data = whole[:draw(st.integers(1, len(whole) - 1))]
    elif kind == "oversized":
        n = draw(st.integers(FRAME_BYTES_MAX + 1, 2**32 - 1))
        data = struct.pack(">I", n) + draw(st.binary(max_size=64))
    else:
        data = draw(st.binary(min_size=1, max_size=300))
    return kind, hello, data


def _whole_frames(data: bytes) -> bool:
    """True if ``data`` is whole frames, each within frame_bytes_max (the sentinel request then follows them)."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            return False
        (n,) = struct.unpack_from(">I", data, pos)
        if n > FRAME_BYTES_MAX:
            return False
        pos += 4 + n
    return pos == len(data)


def served_whole(good: Peer, topic: str, partitions: int) -> int:
    """Read every partition of ``topic`` from its log start to its high watermark: each batch decodes (CRC and
    records) and offsets are dense. A topic a fuzzed request deleted is created again. Returns the records read."""
    n = 0
    for p in range(partitions):
        offset = 0
        while True:
            answer = good.ok("fetch", {"partitions": [[topic, p, offset]], "max_wait_ms": 0})
            [[_, _, code, start, hw, data, *_]] = answer["partitions"]
            if code == 10:  # UNKNOWN_TOPIC_OR_PARTITION: deleted by a fuzzed delete_topic; made again once gone
                assert good.call("create_topic", {"name": topic, "partitions": partitions})[0] in (0, 11)
                return n
            if code == 14 and offset < start:  # OFFSET_OUT_OF_RANGE: a fuzzed topic config's retention moved the start
                offset = start
                continue
            assert code == 0, answer
            records = decode_records(data, topic, p, offset)
            assert [r.offset for r in records] == list(range(offset, offset + len(records)))
            n += len(records)
            offset += len(records)
            if offset >= hw:
                break
            assert records, (topic, p, offset, hw)  # nothing served below the high watermark
    return n


# -- the test ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessBroker]:
    with InProcessBroker(tmp_path_factory.mktemp("fuzz") / "data") as b:
        setup = Peer(b.port)
        setup.ok("create_topic", {"name": ROUND_TRIP_TOPIC})
        setup.ok("create_topic", {"name": "t", "partitions": 2})
        setup.ok("create_queue", {"name": "q"})
        setup.close()
        yield b


TRIED: dict[str, int] = {}


@pytest.mark.timeout(120)
def test_no_input_crashes_hangs_or_disturbs_another_connection(broker):
    good = Peer(broker.port)
    checked = {"n": 0}
    stored = {"examples": 0}

    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(fuzz_input())
    def one(case: tuple[str, bool, bytes]) -> None:
        kind, hello, data = case
        TRIED[kind] = TRIED.get(kind, 0) + 1
        bad = Peer(broker.port, hello=hello)
        try:
            whole = _whole_frames(data)
            bad.sock.sendall(data + (encode_request(SENTINEL_CID, "list_topics", {}) if whole else b""))
            if whole:  # every frame answered or the connection closed, then the sentinel answered (no hang)
                for cid, code, answer in bad.frames():
                    assert type(code) is int and (code == 0 or isinstance(answer, dict)), (cid, code, answer)
                    assert code != 1, answer  # UNKNOWN: an internal error
                    if cid == SENTINEL_CID:
                        break
            elif kind == "oversized":  # FRAME_TOO_LARGE, then the connection closes
                answers = list(bad.frames())
                assert [a[1] for a in answers] == [4], answers
        finally:
            bad.close()
        # another connection: a produce and a fetch of what it produced (timestamped now: retention keeps it)
        checked["n"] += 1
        value = b"round trip %d" % checked["n"]
        base = good.ok("produce", {"topic": ROUND_TRIP_TOPIC, "partition": 0,
                                   "batch": encode_batch([(time.time_ns() // 1_000_000, None, value, None)])})["base_offset"]
        [[_, _, code, _, _, fetched, *_]] = good.ok("fetch", {"partitions": [[ROUND_TRIP_TOPIC, 0, base]],
                                                              "max_wait_ms": 0})["partitions"]
        assert code == 0 and [r.value for r in decode_records(fetched, ROUND_TRIP_TOPIC, 0, base)][:1] == [value]
        for policy in good.ok("limits_list", {}).get("policies", []):  # a fuzzed limit could throttle everyone
            good.call("limits_delete", {"name": policy["name"]})
        stored["examples"] += served_whole(good, "t", 2) > 0  # what forged batches got stored is served whole
        assert broker.internal_errors == []

    one()
    good.close()
    assert stored["examples"] > 20  # batches were stored (forged ones among them) and read back whole
    assert sum(TRIED.values()) == 200 and set(TRIED) == {"requests", "batches", "envelopes", "raw", "truncated",
                                                         "oversized", "noise"}
    assert broker.internal_errors == []


def _reference_frames(data: bytes, limit: int) -> tuple[list[bytes], bool]:
    """The whole frames at the start of ``data``, and whether a length prefix past ``limit`` stops them."""
    frames, pos = [], 0
    while len(data) - pos >= 4:
        (n,) = struct.unpack_from(">I", data, pos)
        if n > limit:
            return frames, True
        if pos + 4 + n > len(data):
            break
        frames.append(data[pos + 4: pos + 4 + n])
        pos += 4 + n
    return frames, False


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.binary(max_size=300) | st.builds(lambda r: encode_frame(list(r))[4:], REQUEST), max_size=6),
       st.binary(max_size=40), st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_the_frame_decoder_takes_any_bytes_split_anywhere(bodies, tail, cuts):
    """Frames of any bodies (requests among them) followed by any bytes, fed in pieces of any sizes: the decoder
    gives exactly the whole frames a reference parse of the bytes gives, raises FRAME_TOO_LARGE where a length
    prefix passes the bound (and again on every later call), and each frame's envelope decodes or raises
    INVALID_REQUEST, nothing else."""
    limit = 200
    data = b"".join(struct.pack(">I", len(b)) + b for b in bodies) + tail
    want, too_large = _reference_frames(data, limit)
    decoder = FrameDecoder(limit)
    got: list[bytes] = []
    raised = False
    pos = 0
    for size in itertools.cycle(cuts):
        if pos >= len(data) or raised:
            break
        decoder.feed(data[pos: pos + size])
        pos += size
        try:
            for frame in iter(decoder.next_frame, None):
                got.append(frame)
        except FrameTooLargeError:
            raised = True
            with pytest.raises(FrameTooLargeError):
                decoder.next_frame()
    assert (got, raised) == (want, too_large)
    for frame in got:
        try:
            cid, api, body = decode_request(frame)
        except InvalidRequestError:
            continue
        assert type(cid) is int and cid >= 0 and type(api) is str and type(body) is dict
