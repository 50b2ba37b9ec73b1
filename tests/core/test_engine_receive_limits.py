# Receive policies through the engine with literal times: a receive takes at most what its client's (or queue's)
# receive policy has room for, is answered THROTTLED with the retry-after once it has none, and gets messages again
# after it; a long poll woken past the rate is answered THROTTLED too; another client is not held back; a push
# delivery throttled by the same policy waits for its retry-after instead of failing; sends are not counted.
from __future__ import annotations

import pytest

from millpond.broker.core.limits.api import LimitsList, LimitsSet
from millpond.broker.core.outcomes import Answer, Wait
from millpond.broker.core.queues.api import (
    CreateQueue,
    ReceiveMessages,
    Received,
    SendEntry,
    SendMessage,
    SendMessageBatch,
)
from millpond.broker.core.queues.push import Deliveries, QueueDeliver, QueueSubscribe
from millpond.broker.wire.errors import ThrottledError

from enginekit import answer, ctx, handle, make_engine

CONN = 7


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    answer(engine, CreateQueue("jobs", visibility_timeout_s=300.0))
    # 5 messages at once, then 10 a second, for each client whose id starts "worker"
    answer(engine, LimitsSet({"name": "recv", "scope": "client:worker*", "unit": "records", "operation": "receive",
                              "params": {"rate": 10, "burst": 5}}))
    answer(engine, SendMessageBatch("jobs", tuple(SendEntry(str(i), b"m%d" % i) for i in range(10))))
    answer(engine, SendMessageBatch("jobs", tuple(SendEntry(str(i), b"n%d" % i) for i in range(10))))
    yield engine
    engine.close()


def receive(engine, now, client="worker-1", max_messages=10, wait_s=0.0):
    return handle(engine, ReceiveMessages("jobs", max_messages=max_messages, wait_s=wait_s), now, client)


def bodies(outcome):
    assert isinstance(outcome, Answer) and type(outcome.value) is Received, outcome
    return [m.body for m in outcome.value.messages]


def test_a_receive_takes_the_policys_room_then_is_throttled_until_its_retry_after(engine):
    assert bodies(receive(engine, 0.0)) == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    with pytest.raises(ThrottledError) as e:
        receive(engine, 0.05)
    assert e.value.details["retry_after_s"] == pytest.approx(0.05) and e.value.details["policy"] == "recv"
    assert bodies(receive(engine, 0.1)) == [b"m5"]  # one message's worth after 100 ms
    assert bodies(receive(engine, 1.1, max_messages=3)) == [b"m6", b"m7", b"m8"]
    assert bodies(receive(engine, 1.1, client="reporter")) == [b"m9"] + [b"n%d" % i for i in range(9)]  # not held
    [stats] = answer(engine, LimitsList()).policies
    assert (stats["stats"]["admitted"], stats["stats"]["throttled"]) == (3, 1)


def test_a_long_poll_woken_past_the_rate_is_answered_throttled_and_takes_nothing(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    answer(engine, CreateQueue("jobs"))
    answer(engine, LimitsSet({"name": "recv", "scope": "client:worker*", "unit": "records", "operation": "receive",
                              "params": {"rate": 1, "burst": 1}}))
    answer(engine, SendMessage("jobs", b"a"))
    assert bodies(receive(engine, 0.0)) == [b"a"]
    parked = receive(engine, 0.1, wait_s=10.0)  # nothing visible: parked, the limits not asked yet
    assert isinstance(parked, Wait) and parked.until == 10.1
    answer(engine, SendMessage("jobs", b"b"), 0.2)
    with pytest.raises(ThrottledError) as e:
        parked.resume(ctx(0.2, "worker-1"), False)
    assert e.value.details["retry_after_s"] == pytest.approx(0.8)
    assert bodies(receive(engine, 1.0)) == [b"b"]  # still there
    engine.close()


def test_sends_are_not_counted_by_a_receive_policy(engine):
    for i in range(20):
        answer(engine, SendMessage("jobs", b"x"), 0.0)  # the default client id "app": not matched anyway
    out = handle(engine, SendMessage("jobs", b"y"), 0.0, "worker-1")
    assert isinstance(out, Answer)
    assert len(bodies(receive(engine, 0.0))) == 5  # the sends left the room untouched


def test_a_push_throttled_by_a_receive_policy_waits_for_its_retry_after(engine):
    holder = handle(engine, QueueSubscribe("jobs", 1, 100, connection=CONN), 0.0, "worker-1")
    assert isinstance(holder, Wait)
    first = handle(engine, QueueDeliver(1, wait_s=20.0, connection=CONN), 0.0, "worker-1")
    assert isinstance(first, Answer) and type(first.value) is Deliveries
    assert [m.body for m in first.value.messages] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    parked = handle(engine, QueueDeliver(1, wait_s=20.0, connection=CONN), 0.0, "worker-1")
    assert isinstance(parked, Wait) and parked.until == pytest.approx(0.1)  # visible messages, no room yet
    parked = parked.resume(ctx(0.05, "worker-1"), False)  # a spurious wake: still no room, same time
    assert isinstance(parked, Wait) and parked.until == pytest.approx(0.1)
    got = parked.resume(ctx(0.1, "worker-1"), True)  # the retry-after passed: not the long poll's end
    assert isinstance(got, Answer) and [m.body for m in got.value.messages] == [b"m5"]
