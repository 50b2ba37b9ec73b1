# The engine's shaping path: a producer's batch never overtakes one of its batches held by a shaping policy, and a
# held batch whose requester went away gives its place back.
from __future__ import annotations

from millpond.broker.core.log.api import CreateTopic, Produce, Produced
from millpond.broker.core.outcomes import Answer, Wait
from millpond.broker.wire.batch import encode_batch
from millpond.broker.wire.errors import OutOfOrderSequenceError

from enginekit import T0_MS, answer, ctx, handle, make_engine

import pytest

SHAPE = {"name": "shape", "scope": "client", "unit": "records", "mode": "shape", "algorithm": "leaky_bucket",
         "params": {"rate": 10, "burst": 1, "queue": 100}}


def produce(engine, seq: int, now: float):
    blob = encode_batch([(T0_MS, None, b"v%d" % seq, None)], producer_id=9, producer_epoch=0, base_sequence=seq)
    return handle(engine, Produce("t", 0, blob), now)


def test_a_batch_behind_a_held_one_is_held_too_even_when_the_held_ones_time_has_come(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    try:
        answer(engine, CreateTopic("t"))
        engine.limits.policies.set(SHAPE)
        first = produce(engine, 0, 0.0)
        assert first == Answer(Produced(0, 0, T0_MS))  # the burst
        held = produce(engine, 1, 0.0)
        assert isinstance(held, Wait) and held.keys == () and held.until == pytest.approx(0.1)
        # at 0.2 s the limiter would admit at once, and the held batch's time has passed, but its timer has not
        # run yet (a busy event loop): the next batch must still wait behind it
        behind = produce(engine, 2, 0.2)
        assert isinstance(behind, Wait) and behind.until == pytest.approx(0.2)
        assert held.resume(ctx(0.2), True).value.base_offset == 1
        assert behind.resume(ctx(0.2), True).value.base_offset == 2
    finally:
        engine.close()


def test_an_abandoned_held_batch_gives_its_place_back(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    try:
        answer(engine, CreateTopic("t"))
        engine.limits.policies.set(SHAPE)
        produce(engine, 0, 0.0)
        held = produce(engine, 1, 0.0)
        assert isinstance(held, Wait) and held.abandon is not None
        held.abandon(ctx(0.5))  # the client closed its connection: nothing of it is appended
        with pytest.raises(OutOfOrderSequenceError):
            produce(engine, 2, 1.0)  # the producer must resend from sequence 1, in order
        again = produce(engine, 1, 1.0)
        assert again.value.base_offset == 1
    finally:
        engine.close()
