# The client against limit policies (issue 4): the producer waits out THROTTLED and delivers at the policy's rate
# with no error surfacing, shaping answers later, another client is unaffected, batches bigger than a policy's
# burst are split and delivered in order, one record too large fails alone, the throttle-wait bound, and the admin
# calls. The real broker serves the real client over in-memory streams, so autojump_clock makes the rates exact.
from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
import trio.testing

import millpond.client._connection
from millpond.broker.config import load_config
from millpond.broker.server.broker import Broker
from millpond.client import connect
from millpond.client.errors import CostExceedsLimitError, InvalidConfigError, ThrottledError, UnknownPolicyError


class _AnyioStream:
    """A Trio in-memory stream with the anyio byte-stream methods the client's Connection uses."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._s = stream

    async def send(self, data: bytes) -> None:
        try:
            await self._s.send_all(data)
        except trio.BrokenResourceError as exc:
            raise anyio.BrokenResourceError from exc
        except trio.ClosedResourceError as exc:
            raise anyio.ClosedResourceError from exc

    async def receive(self, max_bytes: int = 65536) -> bytes:
        try:
            data = await self._s.receive_some(max_bytes)
        except trio.ClosedResourceError as exc:
            raise anyio.ClosedResourceError from exc
        if not data:
            raise anyio.EndOfStream
        return data

    async def aclose(self) -> None:
        await self._s.aclose()


@pytest.fixture
async def memory_broker(nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A broker with no socket; ``connect()`` from the client reaches it over a fresh in-memory stream pair."""
    config = load_config(None, data_dir=str(tmp_path / "d"), fsync="never")
    broker = Broker(config, tmp_path / "d")
    await nursery.start(lambda task_status: broker.serve(listen=False, task_status=task_status))

    async def connect_memory(host: str, port: int) -> _AnyioStream:
        client_side, server_side = trio.testing.memory_stream_pair()
        nursery.start_soon(broker.serve_stream, server_side)
        return _AnyioStream(client_side)

    monkeypatch.setattr(millpond.client._connection.anyio, "connect_tcp", connect_memory)
    yield broker
    await broker.shutdown()


async def produce_at(p: Any, topic: str, per_s: int, duration_s: float, handles: list) -> None:
    """Send ``per_s`` records/s to partition 0 of ``topic``, 2 records every 2000/per_s ms, values numbered."""
    step = 2 / per_s
    start = trio.current_time()
    i = 0
    while trio.current_time() - start < duration_s:
        for _ in range(2):
            handles.append(p.send(topic, b"%d" % i, partition=0))
            i += 1
        await trio.sleep(step)


async def end_offset(c: Any, topic: str) -> int:
    return (await c.describe_topic(topic)).partitions[0].log_end_offset


async def values_in_order(c: Any, topic: str, n: int) -> list[int]:
    got: list[int] = []
    async with c.consumer(auto_offset_reset="earliest") as cons:
        cons.assign([(topic, 0)])
        with trio.fail_after(60):
            while len(got) < n:
                got += [int(r.value) for r in await cons.getmany(max_records=n - len(got))]
    return got


async def test_a_producer_at_twice_the_limit_delivers_at_the_limit_and_another_client_is_unaffected(
        memory_broker, autojump_clock):
    async with connect("memory:1", client_id="admin") as admin, \
            connect("memory:1", client_id="app-1") as app, connect("memory:1", client_id="b-1") as other:
        await admin.create_topic("t")
        await admin.create_topic("u")
        await admin.set_limit("app", scope="client:app-*", unit="records", rate=1000, burst=100)
        await admin.set_limit("b", scope="client:b-*", unit="records", rate=5000, burst=500)
        app_handles: list = []
        other_handles: list = []
        async with app.producer() as p, other.producer() as q:
            t0 = trio.current_time()
            async with trio.open_nursery() as n:
                n.start_soon(produce_at, p, "t", 2000, 4.0, app_handles)
                n.start_soon(produce_at, q, "u", 1000, 4.0, other_handles)
                await trio.sleep_until(t0 + 1.0)
                at_1 = (await end_offset(admin, "t"), await end_offset(admin, "u"))
                await trio.sleep_until(t0 + 4.0)
                at_4 = (await end_offset(admin, "t"), await end_offset(admin, "u"))
            # 2000/s offered for 4 s, 1000/s admitted: half is still buffered when the sender stops
            assert p.statistics().records_buffered > 3000
        app_rate = (at_4[0] - at_1[0]) / 3.0
        other_rate = (at_4[1] - at_1[1]) / 3.0
        assert 990 <= app_rate <= 1010, app_rate  # virtual time: exact up to one batch (issue 4 asks +-5 %)
        assert 990 <= other_rate <= 1010, other_rate
        ps, qs = p.statistics(), q.statistics()
        # no error surfaced: every handle resolved, in order
        sent = len(app_handles)
        assert ps.records_failed == 0 and ps.records_sent == sent and sent >= 8000
        metas = [await h for h in app_handles]
        assert [m.offset for m in metas] == list(range(sent))
        assert await values_in_order(admin, "t", sent) == list(range(sent))
        # many of the app's produce requests were throttled once and then admitted (about half once the bucket is
        # empty; before that, each pair of records reaches an idle producer and goes at once, and none is throttled)
        assert 0.25 <= ps.throttled / (ps.throttled + ps.batches_sent) <= 0.6, ps
        # batches that outgrew the burst were split once, then built to fit
        assert ps.batches_split >= 1 and ps.throttle_wait_s > 0
        assert qs.throttled == 0 and qs.records_failed == 0 and qs.batches_split == 0
        limits = {pol.name: pol for pol in await admin.list_limits()}
        assert limits["app"].stats.throttled == ps.throttled
        assert limits["app"].stats.throttled_by_key == {"app-1": ps.throttled}
        assert limits["app"].stats.never_fits == ps.batches_split
        assert limits["b"].stats.throttled == 0 and limits["b"].stats.throttled_by_key == {}


async def test_shaping_answers_later_with_no_error_at_the_same_rate(memory_broker, autojump_clock):
    async with connect("memory:1", client_id="admin") as admin, connect("memory:1", client_id="app-2") as app:
        await admin.create_topic("t")
        await admin.set_limit("app", scope="client:app-*", unit="records", mode="shape", rate=1000, burst=100,
                              queue=1000)
        handles: list = []
        async with app.producer() as p:
            t0 = trio.current_time()
            async with trio.open_nursery() as n:
                n.start_soon(produce_at, p, "t", 2000, 4.0, handles)
                await trio.sleep_until(t0 + 1.0)
                at_1 = await end_offset(admin, "t")
                await trio.sleep_until(t0 + 4.0)
                at_4 = await end_offset(admin, "t")
        rate = (at_4 - at_1) / 3.0
        # the bound (5 %): the window's edges cut through batches held by the policy, which grow while
        # up to five of them wait, so a 3 s window can be off by about one batch (up to ~100 records)
        assert 950 <= rate <= 1050, rate
        s = p.statistics()
        assert s.throttled == 0 and s.records_failed == 0 and s.records_sent == len(handles) >= 8000
        assert [(await h).offset for h in handles] == list(range(len(handles)))
        stats = {pol.name: pol.stats for pol in await admin.list_limits()}["app"]
        assert stats.throttled == 0 and stats.delayed > 0


async def test_batches_bigger_than_the_burst_are_split_in_order_and_later_ones_fit(memory_broker, autojump_clock):
    async with connect("memory:1", client_id="admin") as admin, connect("memory:1", client_id="app-3") as app:
        await admin.create_topic("t")
        await admin.set_limit("small", scope="client:app-*", rate=100_000, burst=10)
        async with app.producer(linger_s=1.0) as p:
            first = [p.send("t", b"%d" % i, partition=0) for i in range(95)]
            await p.flush()
            assert [(await h).offset for h in first] == list(range(95))
            assert p.statistics().batches_split == 1
            second = [p.send("t", b"%d" % i, partition=0) for i in range(95, 190)]
            await p.flush()
            # built to fit: 10 batches of at most 10 records, no second refusal
            assert [(await h).offset for h in second] == list(range(95, 190))
        s = p.statistics()
        assert s.batches_split == 1 and s.records_failed == 0
        assert await values_in_order(admin, "t", 190) == list(range(190))
        stats = {pol.name: pol.stats for pol in await admin.list_limits()}["small"]
        assert stats.never_fits == 1


async def test_a_bytes_limit_splits_by_size_and_only_a_record_too_large_alone_fails(memory_broker, autojump_clock):
    async with connect("memory:1", client_id="admin") as admin, connect("memory:1", client_id="app-4") as app:
        await admin.create_topic("t")
        await admin.set_limit("bytes", scope="client:app-*", unit="bytes", rate=10_000_000, burst=2000)
        async with app.producer(linger_s=1.0) as p:
            before = [p.send("t", b"%03d" % i + b"x" * 97, partition=0) for i in range(40)]
            huge = p.send("t", b"y" * 5000, partition=0)
            after = [p.send("t", b"%03d" % i + b"x" * 97, partition=0) for i in range(40, 60)]
            await p.flush()
        with pytest.raises(CostExceedsLimitError) as info:
            await huge
        assert info.value.details["max_cost"] == 2000 and info.value.details["unit"] == "bytes"
        assert [(await h).offset for h in before + after] == list(range(60))
        s = p.statistics()
        assert s.records_failed == 1 and s.records_sent == 60 and s.batches_split >= 1
        async with admin.consumer(auto_offset_reset="earliest") as cons:
            cons.assign([("t", 0)])
            got: list = []
            with trio.fail_after(10):
                while len(got) < 60:
                    got += await cons.getmany()
        assert [int(r.value[:3]) for r in got] == list(range(60))


async def test_past_throttle_wait_max_s_the_handle_fails_with_throttled(memory_broker, autojump_clock):
    async with connect("memory:1", client_id="admin") as admin, connect("memory:1", client_id="app-5") as app:
        await admin.create_topic("t")
        await admin.set_limit("slow", scope="client:app-*", rate=10, burst=10)
        async with app.producer(throttle_wait_max_s=0.5) as p:
            ok = [p.send("t", b"a", partition=0) for _ in range(10)]
            await p.flush()
            # 2 records wait 0.2 s (within the bound) and go; 10 more would wait 1 s in total: they fail at once
            waited = [p.send("t", b"b", partition=0) for _ in range(2)]
            await p.flush()
            late = [p.send("t", b"c", partition=0) for _ in range(10)]
            t0 = trio.current_time()
            await p.flush()
            assert trio.current_time() - t0 < 0.01
        assert [(await h).offset for h in ok + waited] == list(range(12))
        for h in late:
            with pytest.raises(ThrottledError) as info:
                await h
        assert info.value.details["retry_after_s"] == 1.0
        s = p.statistics()
        assert s.throttled == 2 and s.records_failed == 10 and s.throttle_wait_s == pytest.approx(0.2)


async def test_limit_admin_round_trip(memory_broker):
    async with connect("memory:1", client_id="admin") as c:
        applied = await c.set_limit("win", scope="topic:orders-*", unit="bytes", algorithm="sliding_window",
                                    limit=1_000_000, window_s=1.0, max_keys=500)
        assert (applied.name, applied.scope, applied.pattern, applied.unit) == ("win", "topic", "orders-*", "bytes")
        assert applied.params == {"limit": 1_000_000, "window_s": 1.0} and applied.max_keys == 500
        assert applied.stats is None
        listed = await c.list_limits()
        assert [p.name for p in listed] == ["default", "win"]
        assert all(p.stats is not None and p.stats.throttled == 0 for p in listed)
        with pytest.raises(InvalidConfigError, match="burst"):
            await c.set_limit("bad", rate=10, burst=-1)
        await c.delete_limit("win")
        with pytest.raises(UnknownPolicyError, match="win"):
            await c.delete_limit("win")
        assert [p.name for p in await c.list_limits()] == ["default"]
