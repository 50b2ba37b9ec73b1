# The producer sends the batches it has ready for many partitions as one produce_batches request (one frame, one
# answer, as Kafka's producer sends one ProduceRequest per broker), settles each batch by its own result (a batch
# throttled in the same request as stored ones is retried alone), and keeps each partition's order when a batch
# too large to copy goes in a request of its own between small ones.
from __future__ import annotations

import trio

from clientkit import drain


async def test_ready_batches_of_many_partitions_go_as_one_request_each_with_its_offsets(broker, client, monkeypatch):
    from millpond.broker.server.loop import RequestLoop

    seen: list[str] = []
    step = RequestLoop._step

    def counting(self, conn, cid, call, what, size=0):
        seen.append(what)
        return step(self, conn, cid, call, what, size)

    monkeypatch.setattr(RequestLoop, "_step", counting)
    await client.create_topic("many", partitions=16)
    async with client.producer(linger_s=0.05) as p:
        handles = [p.send("many", b"%d" % i, partition=i % 16) for i in range(16 * 20)]
    metas = [await h for h in handles]
    assert seen.count("ProduceBatches") == 1 and seen.count("Produce") == 0  # 16 batches, one request
    for part in range(16):
        assert [m.offset for m in metas if m.partition == part] == list(range(20))
    async with client.consumer("many", auto_offset_reset="earliest") as cons:
        got = await drain(cons, 16 * 20)
    assert sorted(int(r.value) for r in got) == list(range(16 * 20))


async def test_a_batch_throttled_beside_stored_ones_is_retried_alone_and_all_arrive_once(broker, client):
    await client.create_topic("free")
    await client.create_topic("capped")
    await client.set_limit("cap", scope="topic:capped", unit="records", rate=200, burst=10)
    async with client.producer(linger_s=0.02, retry_backoff_s=(0.001, 0.01)) as p:
        free = [p.send("free", b"f%d" % i) for i in range(50)]
        capped = [p.send("capped", b"c%d" % i) for i in range(50)]
        with trio.fail_after(10):
            free_metas = [await h for h in free]
            capped_metas = [await h for h in capped]
    stats = p.statistics()
    assert stats.throttled >= 1 and stats.records_failed == 0
    assert [m.offset for m in free_metas] == list(range(50))
    assert [m.offset for m in capped_metas] == list(range(50))  # retried in order, stored once


async def test_a_large_batch_between_small_ones_keeps_each_partitions_order(broker, client):
    await client.create_topic("mixed", partitions=2)
    big = b"x" * 100_000  # a batch over the piece size goes alone, never copied into a shared frame
    async with client.producer(linger_s=0.02) as p:
        handles = []
        for i in range(6):
            handles.append(p.send("mixed", b"s%d" % i, partition=0))
            handles.append(p.send("mixed", big + b"%d" % i if i % 2 else b"t%d" % i, partition=1))
    metas = [await h for h in handles]
    assert [m.offset for m in metas if m.partition == 0] == list(range(6))
    assert [m.offset for m in metas if m.partition == 1] == list(range(6))
    async with client.consumer("mixed", auto_offset_reset="earliest") as cons:
        got = await drain(cons, 12)
    ones = [r.value for r in sorted(got, key=lambda r: r.offset) if r.partition == 1]
    assert ones == [big + b"%d" % i if i % 2 else b"t%d" % i for i in range(6)]


class Results:
    """A produce_batches answer with the given result rows, as the producer's callback receives it."""

    def __init__(self, rows):
        self.rows = rows

    def result(self):
        return {"results": self.rows}


async def test_each_row_of_a_produce_batches_answer_settles_its_own_batch(broker, client, monkeypatch):
    # Acknowledged rows settle together (one lock, one wake of the sender per answer); a row with an error code
    # fails only its batch, and so does a row of the wrong shape (a base offset that is not an int).
    from millpond.client.producer import Producer

    original = Producer._answered_batches
    rewritten: list[int] = []

    def rewrite(self, requests, response, error):
        rows = [list(r) for r in response.result()["results"]]
        for row in rows:
            if row[1] == 1:
                row[2], row[5] = 2, {"name": "INVALID_REQUEST", "message": "refused for the test"}
            elif row[1] == 2:
                row[3] = "not an offset"
        rewritten.append(len(rows))
        original(self, requests, Results(rows), error)

    monkeypatch.setattr(Producer, "_answered_batches", rewrite)
    await client.create_topic("rows", partitions=4)
    async with client.producer(linger_s=0.05, idempotent=False) as p:
        await p.send("rows", b"first", partition=3)  # a lone record goes at once; the next four gather
        handles = [p.send("rows", b"v%d" % i, partition=i) for i in range(4)]
        await p.flush()  # all four in one request (awaiting one first would hurry it alone)
        outcomes = []
        for h in handles:
            try:
                outcomes.append((await h).offset)
            except Exception as exc:
                outcomes.append(type(exc).__name__)
    assert rewritten == [4]
    assert outcomes == [0, "InvalidRequestError", "ValueError", 1]


async def test_a_produce_answer_of_the_wrong_shape_fails_its_batch_and_the_producer_goes_on(broker, client, monkeypatch):
    from millpond.client.producer import Producer

    original = Producer._answered
    spoiled: list[bool] = []

    class NoOffset:
        def result(self):
            return {"timestamp_ms": 0}

    def spoil(self, request, response, error):
        if error is None and not spoiled:
            spoiled.append(True)
            response = NoOffset()
        original(self, request, response, error)

    monkeypatch.setattr(Producer, "_answered", spoil)
    await client.create_topic("shape", partitions=1)
    async with client.producer(idempotent=False) as p:
        first = p.send("shape", b"a")
        try:
            await first
            outcome = "stored"
        except KeyError:
            outcome = "KeyError"
        assert outcome == "KeyError" and spoiled == [True]
        assert (await p.send("shape", b"b")).offset == 1  # the first was stored; only its answer was spoiled
        assert p.statistics().records_failed == 1


async def test_a_produce_batches_answer_with_a_short_row_fails_its_batches_and_the_producer_goes_on(
        broker, client, monkeypatch):
    from millpond.client.producer import Producer

    original = Producer._answered_batches
    spoiled: list[bool] = []

    def spoil(self, requests, response, error):
        if error is None and not spoiled:
            spoiled.append(True)
            rows = [list(r) for r in response.result()["results"]]
            rows[0] = rows[0][:3]
            response = Results(rows)
        original(self, requests, response, error)

    monkeypatch.setattr(Producer, "_answered_batches", spoil)
    await client.create_topic("short", partitions=2)
    async with client.producer(linger_s=0.05, idempotent=False) as p:
        handles = [p.send("short", b"v", partition=i) for i in range(2)]
        await p.flush()
        failed = []
        for h in handles:
            try:
                await h
            except Exception as exc:
                failed.append(type(exc).__name__)
        assert spoiled == [True] and failed == ["UnknownError", "UnknownError"]
        assert (await p.send("short", b"w", partition=0)).offset == 1
