# A coverage-guided fuzzer (atheris, libFuzzer) over the native front door and the engine, with no sockets: each
# input is a few frames, either raw bytes or a request of a kind the input picks (from the native codec's REQUESTS)
# whose fields take typed values, valid record batches, names that exist, or arbitrary msgpack the input spells.
# Every frame goes through NativeCodec.decode, Engine.handle and NativeCodec.encode as the request loop drives them:
# parked requests are resumed when their keys wake or their time comes (the clock is the input's), offloaded work
# runs inline, fsync plans run and apply, and at the end of an input its waits are abandoned as for a closed
# connection. A crash is any exception other than the MillpondError a bad request is answered with (what the
# server would log as an internal error). Complements the hypothesis fuzzer over TCP (tests/server/test_fuzz.py).
#
# Run: python tests/fuzz/fuzz_native.py [libFuzzer flags, e.g. -max_total_time=600 -artifact_prefix=/tmp/]
from __future__ import annotations

import collections
import dataclasses
import itertools
import sys
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["millpond"]):
    import msgpack

    from millpond.broker.config import load_config
    from millpond.broker.core.engine import Engine
    from millpond.broker.core.log import LogManager
    from millpond.broker.core.outcomes import Answer, Context, Offload, Outcome, Wait
    from millpond.broker.server.frontends.native import REQUESTS, NativeCodec
    from millpond.broker.wire.batch import encode_batch
    from millpond.broker.wire.errors import MillpondError
    from millpond.broker.wire.frames import encode_request

T0_MS = 1_700_000_000_000
NAMES = ["t", "q", "q-dlq", "q.fifo", "g", "fuzz", ""]  # topics, queues and groups that exist, or do not
APIS = sorted(REQUESTS)
RESUMES_MAX = 8  # a parked request resumed at most this often per input
# Strings the broker answered with (receipt handles, member ids, subscription ids, task handles): later requests
# pick from them, so deletes, heartbeats and unsubscribes reach what they name.
SEEN: collections.deque[str] = collections.deque(maxlen=64)


def _remember(value: Any, depth: int = 0) -> None:
    if depth > 4:
        return
    if isinstance(value, str):
        if len(value) >= 8:
            SEEN.append(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _remember(getattr(value, f.name), depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value[:16]:
            _remember(v, depth + 1)


class Driver:
    """One engine and one connection's session, driven as the request loop drives them, with a fake clock."""

    def __init__(self, data_dir: Path) -> None:
        config = load_config(None, data_dir=str(data_dir), fsync="always", default_limit_records_per_s=0)
        log = LogManager(data_dir, defaults=config.topic_defaults, batch_bytes_max=config.batch_bytes_max,
                         partitions_max=config.partitions_max, fsync_mode=config.fsync)
        self.engine = Engine(config, log)
        self.now = 0.0
        self.engine.open(self.ctx())
        self.codec = NativeCodec(config)
        self.cids = itertools.count(1)
        self.waits: list[tuple[int, Wait, int]] = []  # (correlation id, wait, times resumed)
        self.session = self.codec.new_session()
        self.request("hello", {"protocol_version": 1, "client_id": "fuzz"})
        for api, body in (("create_topic", {"name": "t", "partitions": 2}), ("create_queue", {"name": "q-dlq"}),
                          ("create_queue", {"name": "q", "dead_letter_queue": "q-dlq", "max_receive_count": 2}),
                          ("create_queue", {"name": "q.fifo"})):
            self.request(api, body)

    def ctx(self) -> Context:
        return Context(T0_MS + int(self.now * 1000), self.now, "fuzz", "127.0.0.1")

    def request(self, api: str, body: Any) -> None:
        self.frame(encode_request(next(self.cids), api, body)[4:])

    def frame(self, body: bytes) -> None:
        try:
            cid, request = self.codec.decode(self.session, body)
        except MillpondError:
            return
        self.run(cid, lambda ctx: self.engine.handle(request, ctx), 0)

    def run(self, cid: int, call: Any, resumed: int) -> None:
        try:
            outcome: Outcome = call(self.ctx())
            while isinstance(outcome, Offload):  # the worker thread's part, inline
                try:
                    result: Any = outcome.work()
                except Exception as exc:  # handed to resume as a value, as the server does
                    result = exc
                outcome = outcome.resume(self.ctx(), result)
            if isinstance(outcome, Answer):
                _remember(outcome.value)
                self.codec.encode(cid, outcome.value)
            elif isinstance(outcome, Wait):
                self.waits.append((cid, outcome, resumed))
            else:
                raise TypeError(f"engine answered with {outcome!r}")
        except MillpondError as exc:
            self.codec.encode_error(cid, exc)
        for job in self.engine.take_jobs():
            try:
                result = job.work()
            except Exception as exc:
                result = exc
            if job.done is not None:
                job.done(result)

    def settle(self, advance_s: float) -> None:
        """Durability, timers and wake-ups: fsync what is pending, move the clock, resume what woke or timed out."""
        woken = set(self.engine.take_woken())
        plan = self.engine.sync_plan()
        if plan is not None:
            result = plan.run()
            woken |= self.engine.synced(plan, result if isinstance(result, OSError) else None)
        self.now += advance_s
        woken |= self.engine.tick(self.ctx())
        waits, self.waits = self.waits, []
        for cid, wait, resumed in waits:
            timed_out = wait.until <= self.now
            if (timed_out or woken.intersection(wait.keys)) and resumed < RESUMES_MAX:
                self.run(cid, lambda ctx, w=wait, t=timed_out: w.resume(ctx, t), resumed + 1)
            else:
                self.waits.append((cid, wait, resumed))

    def close_connection(self) -> None:
        """The connection ends: its parked requests are abandoned; a new session says hello again."""
        waits, self.waits = self.waits, []
        for _, wait, _ in waits:
            if wait.abandon is not None:
                wait.abandon(self.ctx())
        self.settle(0.0)
        self.waits = []
        self.session = self.codec.new_session()
        self.request("hello", {"protocol_version": 1, "client_id": "fuzz"})


def _value(fdp: atheris.FuzzedDataProvider, tp: Any, depth: int = 0) -> Any:
    """A value for a field of type ``tp``, usually of that type, now and then anything msgpack can spell."""
    pick = fdp.ConsumeIntInRange(0, 15)
    if pick == 0 or depth > 3:
        try:
            return msgpack.unpackb(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 24)), raw=False, strict_map_key=False)
        except Exception:
            return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is int:
        return fdp.PickValueInList([0, 1, 2, -1, 5, 1000, 2**31, 2**63 - 1, fdp.ConsumeInt(8)])
    if tp is str:
        if pick < 6 and SEEN:
            return SEEN[fdp.ConsumeIntInRange(0, len(SEEN) - 1)]
        return fdp.PickValueInList(NAMES) if pick < 13 else fdp.ConsumeUnicodeNoSurrogates(12)
    if tp is bytes:
        if pick < 10:
            n = fdp.ConsumeIntInRange(1, 4)
            return encode_batch([(T0_MS + fdp.ConsumeIntInRange(0, 10**6), fdp.ConsumeBytes(3) or None,
                                  fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40)), None) for _ in range(n)])
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 80))
    if tp is bool:
        return fdp.ConsumeBool()
    if tp is float:
        return fdp.ConsumeRegularFloat()
    if tp is Any:
        return _value(fdp, fdp.PickValueInList([int, str, bytes, bool]), depth + 1)
    if origin in (typing.Union, types.UnionType):
        return _value(fdp, fdp.PickValueInList(list(args)), depth + 1)
    if origin is typing.Literal:
        return fdp.PickValueInList(list(args))
    if origin is tuple:
        return [_value(fdp, args[0], depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if origin is dict:
        return {_hashable(_value(fdp, args[0], depth + 1)): _value(fdp, args[1], depth + 1)
                for _ in range(fdp.ConsumeIntInRange(0, 3))}
    if tp is type(None):
        return None
    if dataclasses.is_dataclass(tp):
        return _body(fdp, tp, depth + 1)
    if isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields"):
        hints = typing.get_type_hints(tp)
        return [_value(fdp, hints[f], depth + 1) for f in tp._fields]
    return None


def _hashable(key: Any) -> Any:
    """A map key as msgpack would give it to Python: a decoded map or array key becomes its repr (the wire allows
    any key; a Python dict does not)."""
    try:
        hash(key)
    except TypeError:
        return repr(key)
    return key


def _body(fdp: atheris.FuzzedDataProvider, cls: type, depth: int = 0) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    body: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if fdp.ConsumeIntInRange(0, 7) == 0:
            continue  # missing
        if f.name.endswith("_s"):  # seconds in the core, milliseconds on the wire
            body[f.name[:-2] + "_ms"] = fdp.PickValueInList([0, 1, 100, 30_000, -1, 2**40, None])
        else:
            body[f.name] = _value(fdp, hints[f.name], depth)
    return body


DRIVER: Driver | None = None


def one_input(data: bytes) -> None:
    assert DRIVER is not None
    fdp = atheris.FuzzedDataProvider(data)
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        if fdp.ConsumeIntInRange(0, 9) == 0:
            DRIVER.frame(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)))  # a frame body of any bytes
        else:
            api = APIS[fdp.ConsumeIntInRange(0, len(APIS) - 1)]
            DRIVER.request(api, _body(fdp, REQUESTS[api]))
        DRIVER.settle(fdp.PickValueInList([0.0, 0.0, 0.001, 1.0, 31.0, 301.0]))
    DRIVER.close_connection()


def main(argv: list[str]) -> None:
    global DRIVER
    with tempfile.TemporaryDirectory(prefix="millpond-fuzz-") as d:
        DRIVER = Driver(Path(d) / "data")
        atheris.Setup(argv, one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
