# Several batches in one produce request (as Kafka's ProduceRequest carries many partitions): each is produced as a
# lone produce would be, with its own result, and the request is answered once every batch is settled — durable
# ones under fsync=always, held ones after their shaping delay, refused ones at once with their own error.
from __future__ import annotations

import math

import pytest

from millpond.broker.core.log.api import (
    BATCHES_PER_REQUEST_MAX,
    BatchResult,
    CreateTopic,
    ProduceBatch,
    ProduceBatches,
    Produced,
    ProducedBatches,
    partition_key,
)
from millpond.broker.core.outcomes import Answer, Wait
from millpond.broker.wire.batch import encode_batch
from millpond.broker.wire.errors import (
    CorruptBatchError,
    InvalidRequestError,
    OutOfOrderSequenceError,
    UnknownTopicOrPartitionError,
)

from enginekit import T0_MS, answer, ctx, flush, handle, make_engine

SHAPE = {"name": "shape", "scope": "client", "unit": "records", "mode": "shape", "algorithm": "leaky_bucket",
         "params": {"rate": 10, "burst": 1, "queue": 100}}


def batch(value: bytes = b"v", *, seq: int = -1) -> bytes:
    if seq < 0:
        return encode_batch([(T0_MS, None, value, None)])
    return encode_batch([(T0_MS, None, value, None)], producer_id=9, producer_epoch=0, base_sequence=seq)


@pytest.fixture(params=["never", "always"])
def engine(tmp_path, request):
    engine = make_engine(tmp_path, fsync=request.param)
    answer(engine, CreateTopic("t", 3))
    yield engine
    engine.close()


def test_each_batch_gets_its_own_result_and_a_refused_one_refuses_only_itself(engine):
    garbage = bytearray(batch(b"x"))
    garbage[-1] ^= 0xFF  # the CRC no longer matches
    req = ProduceBatches((ProduceBatch("t", 0, batch(b"a")), ProduceBatch("t", 2, batch(b"b")),
                          ProduceBatch("nope", 0, batch(b"c")), ProduceBatch("t", 0, bytes(garbage)),
                          ProduceBatch("t", 0, batch(b"d"))))
    outcome = handle(engine, req)
    if engine.config.fsync == "always":
        assert isinstance(outcome, Wait) and outcome.until == math.inf
        assert set(outcome.keys) == {partition_key("t", 0), partition_key("t", 2)}
        assert flush(engine) == {partition_key("t", 0), partition_key("t", 2)}
        outcome = outcome.resume(ctx(0.01), False)
    assert isinstance(outcome, Answer) and type(outcome.value) is ProducedBatches
    results = outcome.value.results
    assert [(r.topic, r.partition) for r in results] == [("t", 0), ("t", 2), ("nope", 0), ("t", 0), ("t", 0)]
    assert results[0] == BatchResult("t", 0, Produced(0, 0, T0_MS), None)
    assert results[1] == BatchResult("t", 2, Produced(2, 0, T0_MS), None)
    assert results[4] == BatchResult("t", 0, Produced(0, 1, T0_MS), None)  # after the refused one, in order
    assert isinstance(results[2].error, UnknownTopicOrPartitionError) and results[2].produced is None
    assert isinstance(results[3].error, CorruptBatchError) and results[3].produced is None


def test_a_request_waits_for_its_last_durable_batch_only_under_always(tmp_path):
    engine = make_engine(tmp_path, fsync="always")
    try:
        answer(engine, CreateTopic("t", 2))
        outcome = handle(engine, ProduceBatches((ProduceBatch("t", 0, batch()), ProduceBatch("t", 1, batch()))))
        assert isinstance(outcome, Wait)
        again = outcome.resume(ctx(0.01), False)  # a wake before any fsync: both still wait
        assert isinstance(again, Wait) and len(again.keys) == 2
        still = again.resume(ctx(0.02), False)  # spurious wakes are harmless
        assert isinstance(still, Wait) and len(still.keys) == 2
        flush(engine)
        done = still.resume(ctx(0.03), False)
        assert [r.produced.base_offset for r in done.value.results] == [0, 0]
    finally:
        engine.close()


def test_a_held_batch_holds_the_request_until_its_time_and_abandon_gives_its_place_back(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    try:
        answer(engine, CreateTopic("t", 2))
        engine.limits.policies.set(SHAPE)
        outcome = handle(engine, ProduceBatches((ProduceBatch("t", 0, batch(b"a", seq=0)),
                                                 ProduceBatch("t", 1, batch(b"b")))))
        # the second batch is past the burst: held 0.1 s by the shaping policy; the first is stored at once
        assert isinstance(outcome, Wait) and outcome.keys == () and outcome.until == pytest.approx(0.1)
        early = outcome.resume(ctx(0.05), False)  # woken early (another part's key): the delay is not over
        assert isinstance(early, Wait) and early.until == pytest.approx(0.1)
        done = early.resume(ctx(0.1), True)
        assert [r.produced.base_offset for r in done.value.results] == [0, 0]

        held = handle(engine, ProduceBatches((ProduceBatch("t", 0, batch(b"c", seq=1)),)), 0.1)
        assert isinstance(held, Wait) and held.abandon is not None
        held.abandon(ctx(0.2))  # the client went away: nothing of it is appended, its place is given back
        [behind] = handle(engine, ProduceBatches((ProduceBatch("t", 0, batch(b"d", seq=2)),)), 1.0).value.results
        assert isinstance(behind.error, OutOfOrderSequenceError)  # the producer must resend from sequence 1
        [again] = handle(engine, ProduceBatches((ProduceBatch("t", 0, batch(b"c", seq=1)),)), 1.0).value.results
        assert again == BatchResult("t", 0, Produced(0, 1, T0_MS), None)
    finally:
        engine.close()


@pytest.mark.parametrize("n", [0, BATCHES_PER_REQUEST_MAX + 1])
def test_no_batches_or_too_many_is_refused_naming_the_bound(engine, n):
    with pytest.raises(InvalidRequestError, match=f"1 to {BATCHES_PER_REQUEST_MAX:d} batches, got {n}"):
        handle(engine, ProduceBatches(tuple(ProduceBatch("t", 0, b"") for _ in range(n))))
