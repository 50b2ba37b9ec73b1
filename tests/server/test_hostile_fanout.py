# Fan-out requests from a hostile client, against the real broker over in-memory streams: subscribe spam is bounded
# (idempotent for the same queue, TOO_MANY_SUBSCRIPTIONS past the per-topic bound), malformed and oversized
# subscribe arguments get error answers naming the field, and the broker keeps serving.
from __future__ import annotations

import json

from millpond.broker.core.fanout.subscriptions import SUBSCRIPTIONS_PER_TOPIC_MAX
from millpond.broker.wire import errors

from serverkit import start_harness


async def test_subscribe_spam_is_bounded(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path)
    c = await h.connect()
    await c.ok("create_topic", {"name": "t", "partitions": 1})
    await c.ok("create_queue", {"name": "q0"})
    first = await c.ok("subscribe", {"topic": "t", "queue": "q0"})
    for _ in range(500):  # the same subscription again: answered as it is, nothing grows
        assert (await c.ok("subscribe", {"topic": "t", "queue": "q0"}))["id"] == first["id"]
    for i in range(1, SUBSCRIPTIONS_PER_TOPIC_MAX + 1):
        await c.ok("create_queue", {"name": f"q{i}"})
    for i in range(1, SUBSCRIPTIONS_PER_TOPIC_MAX):
        await c.ok("subscribe", {"topic": "t", "queue": f"q{i}"})
    code, answer = await c.call("subscribe", {"topic": "t", "queue": f"q{SUBSCRIPTIONS_PER_TOPIC_MAX}"})
    assert (code, answer["name"]) == (errors.TooManySubscriptionsError.code, "TOO_MANY_SUBSCRIPTIONS")
    assert f"topic 't' has {SUBSCRIPTIONS_PER_TOPIC_MAX} subscriptions" in answer["message"]
    listed = await c.ok("list_subscriptions", {"topic": "t"})
    assert len(listed["subscriptions"]) == SUBSCRIPTIONS_PER_TOPIC_MAX
    assert len(h.broker.engine.fanout.subs.by_id) == SUBSCRIPTIONS_PER_TOPIC_MAX


async def test_malformed_fanout_requests_get_errors_and_the_broker_keeps_serving(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path)
    c = await h.connect()
    await c.ok("create_topic", {"name": "t", "partitions": 1})
    await c.ok("create_queue", {"name": "q"})
    deep = "[" * 100_000
    huge = json.dumps({"k": ["x" * 300_000]})
    cases = [
        ("subscribe", {"topic": "t"}, errors.InvalidParameterValueError, "give a queue or a url"),
        ("subscribe", {"topic": "t", "url": 5}, errors.InvalidRequestError, "url"),
        ("subscribe", {"topic": "t", "url": "http://" + "a" * 100_000}, errors.InvalidParameterValueError, "2,048"),
        ("subscribe", {"topic": "t", "url": "http://10.0.0.1/x"}, errors.InvalidParameterValueError, "webhook_allow"),
        ("subscribe", {"topic": "t", "url": "http://127.0.0.1/x", "min_delay_ms": -1}, errors.InvalidRequestError,
         "min_delay_ms"),
        ("subscribe", {"topic": "t", "url": "http://127.0.0.1/x", "attempts_max": 10**9},
         errors.InvalidParameterValueError, "attempts_max"),
        ("subscribe", {"topic": "t", "queue": "q", "start": 1.5}, errors.InvalidRequestError, "start"),
        ("subscribe", {"topic": "t", "queue": "q", "start": -5}, errors.InvalidParameterValueError, "start"),
        ("subscribe", {"topic": "t", "queue": "q", "raw": "yes"}, errors.InvalidRequestError, "raw"),
        ("subscribe", {"topic": "t", "queue": "q", "filter_policy": {"a": 1}}, errors.InvalidRequestError,
         "filter_policy"),
        ("subscribe", {"topic": "t", "queue": "q", "filter_policy": deep}, errors.InvalidParameterValueError,
         "nested too deeply"),
        ("subscribe", {"topic": "t", "queue": "q", "filter_policy": huge}, errors.InvalidParameterValueError,
         "filter policy"),
        ("subscribe", {"topic": "t", "queue": "q", "filter_policy": '{"a": ["x"]}', "filter_policy_scope": "Both"},
         errors.InvalidParameterValueError, "filter_policy_scope"),
        ("subscribe", {"topic": "__millpond_subscriptions", "queue": "q"}, errors.UnknownTopicOrPartitionError,
         "__millpond_subscriptions"),
        ("subscribe", {"topic": "t" * 100_000, "queue": "q"}, errors.UnknownTopicOrPartitionError, "unknown topic"),
        ("subscribe", {"topic": "t", "queue": "q" * 100_000}, errors.UnknownQueueError, "does not exist"),
        ("subscribe", {"topic": "t", "queue": "q", "dead_letter_queue": "d" * 100_000}, errors.UnknownQueueError,
         "does not exist"),
        ("unsubscribe", {"id": 7}, errors.InvalidRequestError, "id"),
        ("unsubscribe", {"id": "x" * 10_000}, errors.UnknownSubscriptionError, "no subscription"),
        ("describe_subscription", {}, errors.InvalidRequestError, "id"),
        ("list_subscriptions", {"topic": ["t"]}, errors.InvalidRequestError, "topic"),
    ]
    for api, body, error, text in cases:
        code, answer = await c.call(api, body)
        assert (code, answer["name"]) == (error.code, error.name), (api, body.keys(), answer)
        assert text in answer["message"], answer["message"]
        assert len(answer["message"]) < 1000 and len(str(answer)) < 2000
    assert (await c.ok("list_subscriptions", {}))["subscriptions"] == []
    assert (await c.ok("subscribe", {"topic": "t", "queue": "q"}))["topic"] == "t"
