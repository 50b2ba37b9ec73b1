# Webhook subscriptions through the engine with literal times and no Trio: the requests are the jobs the engine hands
# out (run here by hand, through a scripted poster in place of http.py's): retries at the backoff's times with the
# same message id, the dead-letter queue after the last attempt, a permanent failure dead-lettered at once, the
# concurrency bound, the rate, a slow endpoint not holding back another subscription, the broker-wide bound, the
# cursor over settled records only, redelivery after a restart, the allow-list at subscribe time, a result for a
# subscription gone meanwhile, and a full dead-letter queue tried again.
from __future__ import annotations

import json

import pytest

from millpond.broker.core.fanout.api import DescribeSubscription, ListSubscriptions, Subscribe, Unsubscribe
from millpond.broker.core.fanout.delivery import record_message_id
from millpond.broker.core.fanout.http import HttpResult
from millpond.broker.core.log.api import CreateTopic
from millpond.broker.core.queues.api import CreateQueue, DeleteMessage, SendMessage
from millpond.broker.wire.errors import InvalidConfigError, InvalidParameterValueError

from enginekit import answer, flush, make_engine
from test_engine_fanout import bodies, produce, receive_all, run

OK, FAIL, TIMEOUT = HttpResult(200), HttpResult(500, "HTTP 500"), HttpResult(None, "no answer within 15 s")


class Draw:
    """The jitter's draws: always ``value``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


class Poster:
    """Answers each URL from its script (the last answer repeats) and records every request."""

    def __init__(self, script: dict[str, list[HttpResult]]) -> None:
        self.script = script
        self.calls: list[tuple[str, bytes, dict[str, str], float]] = []

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> HttpResult:
        self.calls.append((url, body, headers, timeout_s))
        answers = self.script[url]
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def to(self, url: str) -> list[tuple[str, bytes, dict[str, str], float]]:
        return [c for c in self.calls if c[0] == url]


def step(engine, now: float, hold: tuple[str, ...] = ()) -> list:
    """One round at ``now``: deliver what is due, run the requests handed out (their answers are back at once,
    except those to URLs in ``hold``: returned, in flight), settle what came back."""
    run(engine, now)
    held = []
    for job in engine.take_jobs():
        before = len(engine.fanout.poster.calls) if isinstance(engine.fanout.poster, Poster) else 0
        result = job.work()
        calls = engine.fanout.poster.calls if isinstance(engine.fanout.poster, Poster) else []
        if len(calls) > before and calls[-1][0] in hold:
            held.append((job, result))
        elif job.done is not None:
            job.done(result)
    run(engine, now)
    return held


A, B = "http://127.0.0.1:9000/a", "http://127.0.0.1:9000/b"


@pytest.fixture
def engine(tmp_path):
    e = make_engine(tmp_path, fsync="never")
    answer(e, CreateTopic("t", 1))
    answer(e, CreateQueue("dlq"))
    e.fanout.rng = Draw(0.0)
    yield e
    e.close()


def test_two_failures_then_success_deliver_on_the_third_attempt_with_the_same_message_id(engine):
    engine.fanout.poster = poster = Poster({A: [FAIL, TIMEOUT, OK]})
    s = answer(engine, Subscribe("t", url=A, min_delay_s=1.0, max_delay_s=10.0))
    produce(engine, "t", 0, (b"hello", {"kind": b"x"}, b"k"))
    step(engine, 1.0)
    assert len(poster.calls) == 1
    step(engine, 1.9)  # the first retry is due at 1.0 + 1 s
    assert len(poster.calls) == 1
    step(engine, 2.0)
    assert len(poster.calls) == 2
    step(engine, 3.9)  # the second at 2.0 + 2 s
    assert len(poster.calls) == 2
    step(engine, 4.0)
    calls = poster.to(A)
    assert len(calls) == 3
    mid = record_message_id("t", 0, 0)
    assert [c[2]["x-millpond-message-id"] for c in calls] == [mid] * 3
    assert [c[2]["x-millpond-attempt"] for c in calls] == ["1", "2", "3"]
    assert {c[1] for c in calls} == {calls[0][1]}  # the same body every time
    env = json.loads(calls[0][1])
    assert (env["MessageId"], env["Message"], env["SubscriptionId"], env["Key"]) == (mid, "hello", s.id, "k")
    assert calls[0][2]["x-millpond-topic"] == "t" and calls[0][2]["x-millpond-subscription-id"] == s.id
    assert calls[0][3] == 15.0  # SNS's timeout
    d = answer(engine, DescribeSubscription(s.id), 5.0)
    assert (d.delivered, d.failed, d.dead_lettered, d.lag) == (1, 0, 0, 0)
    assert d.partitions[0].cursor == 1
    step(engine, 100.0)
    assert len(poster.calls) == 3  # delivered: never sent again


def test_a_webhook_that_always_fails_sends_the_record_to_the_dead_letter_queue_after_the_last_attempt(engine):
    engine.fanout.poster = poster = Poster({A: [FAIL]})
    s = answer(engine, Subscribe("t", url=A, dead_letter_queue="dlq", attempts_max=3, min_delay_s=1.0,
                                 max_delay_s=1.0))
    produce(engine, "t", 0, b"doomed")
    for now in (1.0, 2.0, 2.5):
        step(engine, now)
    assert len(poster.calls) == 2 and bodies(engine, "dlq", 2.5) == []
    step(engine, 3.0)
    assert len(poster.calls) == 3
    [dead] = bodies(engine, "dlq", 3.0)
    assert (dead["Message"], dead["MessageId"], dead["SubscriptionId"]) == ("doomed", record_message_id("t", 0, 0),
                                                                            s.id)
    d = answer(engine, DescribeSubscription(s.id), 3.0)
    assert (d.delivered, d.failed, d.dead_lettered, d.partitions[0].cursor) == (0, 1, 1, 1)
    step(engine, 50.0)
    assert len(poster.calls) == 3


def test_without_a_dead_letter_queue_the_record_is_counted_failed(engine):
    engine.fanout.poster = Poster({A: [FAIL]})
    s = answer(engine, Subscribe("t", url=A, attempts_max=1))
    produce(engine, "t", 0, b"x")
    step(engine, 1.0)
    d = answer(engine, DescribeSubscription(s.id), 1.0)
    assert (d.delivered, d.failed, d.dead_lettered, d.partitions[0].cursor) == (0, 1, 0, 1)


def test_an_address_refused_at_delivery_is_dead_lettered_at_once(engine):
    engine.fanout.poster = poster = Poster({A: [HttpResult(None, "resolves to 10.0.0.1", permanent=True)]})
    s = answer(engine, Subscribe("t", url=A, dead_letter_queue="dlq", attempts_max=5, min_delay_s=1.0))
    produce(engine, "t", 0, b"x")
    step(engine, 1.0)
    assert len(poster.calls) == 1 and len(bodies(engine, "dlq", 1.0)) == 1
    assert answer(engine, DescribeSubscription(s.id), 1.0).dead_lettered == 1


def test_at_most_concurrency_max_requests_are_in_flight(engine):
    engine.fanout.poster = poster = Poster({A: [OK]})
    s = answer(engine, Subscribe("t", url=A, concurrency_max=3))
    produce(engine, "t", 0, *[f"v{i}".encode() for i in range(10)])
    held = step(engine, 1.0, hold=(A,))
    assert len(held) == 3 and len(poster.calls) == 3
    assert step(engine, 2.0, hold=(A,)) == []  # nothing more starts while three are out
    for job, result in held:
        job.done(result)
    held = step(engine, 3.0, hold=(A,))
    assert len(held) == 3 and len(poster.calls) == 6
    d = answer(engine, DescribeSubscription(s.id), 3.0)
    assert (d.delivered, d.partitions[0].cursor) == (3, 3)
    for job, result in held:
        job.done(result)
    for now in (4.0, 5.0):
        step(engine, now)
    assert [json.loads(c[1])["Message"] for c in poster.calls] == [f"v{i}" for i in range(10)]
    assert answer(engine, DescribeSubscription(s.id), 5.0).partitions[0].cursor == 10


def test_a_rate_spaces_the_requests(engine):
    engine.fanout.poster = poster = Poster({A: [OK]})
    answer(engine, Subscribe("t", url=A, rate_per_second=2.0))
    produce(engine, "t", 0, b"1", b"2", b"3")
    starts = []
    now = 1.0
    while len(poster.calls) < 3 and now < 5.0:
        n = len(poster.calls)
        step(engine, now)
        starts += [now] * (len(poster.calls) - n)
        now = round(now + 0.25, 2)
    assert starts == [1.0, 1.5, 2.0]


def test_a_slow_endpoint_does_not_hold_back_another_subscription(engine):
    engine.fanout.poster = poster = Poster({A: [OK], B: [OK]})
    slow = answer(engine, Subscribe("t", url=A))
    fast = answer(engine, Subscribe("t", url=B))
    produce(engine, "t", 0, *[f"v{i}".encode() for i in range(20)])
    held = []
    for now in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        held += step(engine, now, hold=(A,))
    assert len(poster.to(A)) == 4 and len(held) == 4  # its concurrency bound, all still out
    assert [json.loads(c[1])["Message"] for c in poster.to(B)] == [f"v{i}" for i in range(20)]
    assert answer(engine, DescribeSubscription(fast.id), 6.0).delivered == 20
    d = answer(engine, DescribeSubscription(slow.id), 6.0)
    assert (d.delivered, d.partitions[0].cursor, d.lag) == (0, 0, 20)


def test_the_broker_wide_bound_on_requests_in_flight(tmp_path):
    e = make_engine(tmp_path, fsync="never", webhook_requests_max=5)
    answer(e, CreateTopic("t", 1))
    e.fanout.poster = poster = Poster({A: [OK], B: [OK]})
    answer(e, Subscribe("t", url=A))
    answer(e, Subscribe("t", url=B))
    produce(e, "t", 0, *[b"v"] * 10)
    held = step(e, 1.0, hold=(A, B))
    assert len(held) == 5 and {len(poster.to(A)), len(poster.to(B))} == {4, 1}
    e.close()


def test_a_record_not_settled_before_a_restart_is_delivered_again_after_it(tmp_path):
    e = make_engine(tmp_path, fsync="never")
    answer(e, CreateTopic("t", 1))
    e.fanout.poster = Poster({A: [OK]})
    s = answer(e, Subscribe("t", url=A, concurrency_max=1))
    produce(e, "t", 0, b"one", b"two")
    step(e, 1.0)  # "one" delivered
    held = step(e, 3.0, hold=(A,))  # "two" in flight
    assert len(held) == 1
    flush(e)
    step(e, 5.0, hold=(A,))  # the cursor (1) is saved once the save interval has passed
    flush(e)
    e.close()
    again = make_engine(tmp_path, fsync="never", opened_at=10.0)
    again.fanout.poster = poster = Poster({A: [OK]})
    step(again, 11.0)
    assert [json.loads(c[1])["Message"] for c in poster.calls] == ["two"]  # at least once: "two" again, not "one"
    assert answer(again, DescribeSubscription(s.id), 11.0).partitions[0].cursor == 2
    [info] = answer(again, ListSubscriptions("t"), 11.0).subscriptions
    assert (info.url, info.queue, info.delivery.concurrency_max) == (A, None, 1)
    again.close()


def test_a_url_outside_the_allow_list_is_refused_at_subscribe_time(engine):
    for url in ("http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data", "http://example.com/h"):
        with pytest.raises(InvalidParameterValueError) as err:
            answer(engine, Subscribe("t", url=url))
        assert "not in the broker's webhook_allow list" in err.value.message
    assert answer(engine, ListSubscriptions("t")).subscriptions == ()


def test_a_listed_host_may_be_subscribed(tmp_path):
    e = make_engine(tmp_path, fsync="never", webhook_allow=["hooks.example.com", "10.1.0.0/16"])
    answer(e, CreateTopic("t", 1))
    assert answer(e, Subscribe("t", url="https://hooks.example.com/in")).url == "https://hooks.example.com/in"
    assert answer(e, Subscribe("t", url="http://10.1.2.3:8080/in")).url == "http://10.1.2.3:8080/in"
    with pytest.raises(InvalidParameterValueError):
        answer(e, Subscribe("t", url="http://127.0.0.1/in"))  # the operator's list replaces loopback
    e.close()


def test_a_bad_allow_list_entry_stops_the_broker_from_starting(tmp_path):
    with pytest.raises(InvalidConfigError, match="neither a host name nor a CIDR"):
        make_engine(tmp_path, webhook_allow=["http://x"])


def test_subscribe_takes_a_queue_or_a_url_and_delivery_settings_only_with_a_url(engine):
    for req in (Subscribe("t"), Subscribe("t", queue="dlq", url=A), Subscribe("t", queue="dlq", attempts_max=2)):
        with pytest.raises(InvalidParameterValueError):
            answer(engine, req)
    with pytest.raises(InvalidParameterValueError) as err:
        answer(engine, Subscribe("t", url=A, concurrency_max=100))
    assert err.value.details["parameter"] == "concurrency_max"


def test_the_same_url_again_answers_the_same_subscription_and_other_settings_are_refused(engine):
    first = answer(engine, Subscribe("t", url=A, attempts_max=2))
    assert answer(engine, Subscribe("t", url=A, attempts_max=2)).id == first.id
    with pytest.raises(InvalidParameterValueError, match="already subscribed"):
        answer(engine, Subscribe("t", url=A, attempts_max=3))


def test_a_filtered_webhook_gets_only_matching_records_and_its_cursor_passes_the_others(engine):
    engine.fanout.poster = poster = Poster({A: [OK]})
    s = answer(engine, Subscribe("t", url=A, raw=True, filter_policy=json.dumps({"kind": ["order"]})))
    produce(engine, "t", 0, (b"1", {"kind": b"order"}, None), (b"2", {"kind": b"refund"}, None),
            (b"3", {"kind": b"order"}, None))
    step(engine, 1.0)
    assert [c[1] for c in poster.calls] == [b"1", b"3"]
    assert poster.calls[0][2]["x-millpond-raw-delivery"] == "true"
    d = answer(engine, DescribeSubscription(s.id), 1.0)
    assert (d.delivered, d.filtered_out, d.partitions[0].cursor) == (2, 1, 3)
    assert d.last_delivery_lag_s == 1.0


def test_a_result_for_a_subscription_gone_meanwhile_is_dropped(engine):
    engine.fanout.poster = poster = Poster({A: [OK]})
    s = answer(engine, Subscribe("t", url=A))
    produce(engine, "t", 0, b"x")
    held = step(engine, 1.0, hold=(A,))
    assert len(held) == 1 and engine.fanout.in_flight == 1
    answer(engine, Unsubscribe(s.id), 1.5)
    for job, result in held:
        job.done(result)
    step(engine, 2.0)
    assert engine.fanout.in_flight == 0 and engine.fanout.pump.active == {}
    assert len(poster.calls) == 1 and answer(engine, ListSubscriptions("t"), 2.0).subscriptions == ()


def test_a_full_dead_letter_queue_is_tried_again_until_it_has_room(tmp_path):
    e = make_engine(tmp_path, fsync="never", queue_messages_max=1)
    answer(e, CreateTopic("t", 1))
    answer(e, CreateQueue("dlq"))
    answer(e, SendMessage("dlq", b"already here"))
    e.fanout.poster = Poster({A: [FAIL]})
    s = answer(e, Subscribe("t", url=A, dead_letter_queue="dlq", attempts_max=1))
    produce(e, "t", 0, b"doomed")
    step(e, 1.0)
    d = answer(e, DescribeSubscription(s.id), 1.0)
    assert (d.failed, d.dead_lettered, d.partitions[0].cursor) == (0, 0, 0)  # held until the queue has room
    assert e.fanout.next_deadline() == 1.5
    [old] = receive_all(e, "dlq", 1.2)
    answer(e, DeleteMessage("dlq", old.receipt_handle), 1.2)
    step(e, 1.5)
    assert [b["Message"] for b in bodies(e, "dlq", 1.6)] == ["doomed"]
    d = answer(e, DescribeSubscription(s.id), 1.6)
    assert (d.failed, d.dead_lettered, d.partitions[0].cursor) == (1, 1, 1)
    e.close()
