# The subscriptions' state (subscriptions.py) alone: events replay to the same state, bounds, idempotent subscribe,
# and cursor checkpoints saved only once the sends they cover are durable, at most once a second, at most
# CHECKPOINTS_MAX waiting.
from __future__ import annotations

import math

import pytest

from millpond.broker.core.fanout.subscriptions import CHECKPOINTS_MAX, SAVE_INTERVAL_S, Subscriptions, Target
from millpond.broker.wire.errors import (
    InvalidParameterValueError,
    TooManySubscriptionsError,
    UnknownSubscriptionError,
)

Q = Target("queue", "q")


def subscribe(subs, sub_id="s1", topic="t", target=Q, policy=None, raw=False, cursors=None):
    return subs.subscribe(sub_id, topic, target, policy, "MessageAttributes", raw, None, cursors or {0: 5}, 1000)


def test_events_replay_to_the_same_state():
    live = Subscriptions()
    s, created = subscribe(live, policy='{"a": ["x"]}')
    assert created and s.cursors == {0: 5} and s.policy is not None
    subscribe(live, "s2", target=Target("queue", "r"))
    s.cursors[0] = 9
    s.delivered, s.filtered = 3, 1
    live.progressed(s, needs=40)
    live.save(durable=40, now=0.0)
    live.unsubscribe("s2")
    events = live.take_events()
    assert [e[0] for e in events] == ["sub", "sub", "cursor", "unsub"]
    replayed = Subscriptions()
    for e in events:
        replayed.apply(e)
    [r] = replayed.by_id.values()
    assert (r.id, r.cursors, r.saved, r.delivered, r.filtered, r.filter_policy) == (
        "s1", {0: 9}, {0: 9}, 3, 1, '{"a": ["x"]}')
    assert list(replayed.by_topic) == ["t"]


def test_subscribe_again_is_idempotent_and_other_settings_are_refused():
    subs = Subscriptions()
    s, _ = subscribe(subs)
    again, created = subscribe(subs, "other-id")
    assert again is s and not created
    with pytest.raises(InvalidParameterValueError, match="already subscribed"):
        subscribe(subs, "other-id", raw=True)
    assert len(subs.take_events()) == 1


@pytest.mark.parametrize("again, same", [
    ('{ "price": [{"numeric": [">", 10]}],\n  "kind": ["a", "b"] }', True),  # whitespace and key order only
    ('{"kind":["a","b"],"price":[{"numeric":[">",10]}]}', True),
    ('{"price":[{"numeric":[">",10]}],"kind":["a","b"]}', True),
    ('{"kind": ["b", "a"], "price": [{"numeric": [">", 10]}]}', False),  # another list is another policy
    ('{"kind": ["a"], "price": [{"numeric": [">", 10]}]}', False),
    ('{"kind": ["a", "b"], "price": [{"numeric": [">=", 10]}]}', False),
    (None, False),
])
def test_an_idempotent_subscribe_compares_the_parsed_filter_policy_not_its_text(again, same):
    subs = Subscriptions()
    s, _ = subscribe(subs, policy='{"kind": ["a", "b"], "price": [{"numeric": [">", 10]}]}')
    if same:
        assert subscribe(subs, "other-id", policy=again) == (s, False)
        assert s.filter_policy == '{"kind": ["a", "b"], "price": [{"numeric": [">", 10]}]}'  # the first text kept
    else:
        with pytest.raises(InvalidParameterValueError, match="already subscribed .* with other settings"):
            subscribe(subs, "other-id", policy=again)
    assert len(subs.take_events()) == 1


def test_bounds_per_topic_and_per_broker():
    subs = Subscriptions(per_topic_max=2, total_max=3)
    subscribe(subs, "a", target=Target("queue", "1"))
    subscribe(subs, "b", target=Target("queue", "2"))
    with pytest.raises(TooManySubscriptionsError, match="topic 't' has 2"):
        subscribe(subs, "c", target=Target("queue", "3"))
    subscribe(subs, "c", topic="u", target=Target("queue", "3"))
    with pytest.raises(TooManySubscriptionsError, match="the broker has 3"):
        subscribe(subs, "d", topic="v", target=Target("queue", "4"))
    subs.unsubscribe("a")
    subscribe(subs, "d", topic="v", target=Target("queue", "4"))


def test_filter_policy_text_is_bounded_in_all():
    subs = Subscriptions()
    policy = '{"k": ["%s"]}' % ("x" * 1000)
    subs.policy_bytes_max = 2 * len(policy) + 10
    subscribe(subs, "a", target=Target("queue", "1"), policy=policy)
    subscribe(subs, "b", target=Target("queue", "2"), policy=policy)
    with pytest.raises(TooManySubscriptionsError, match="filter policies hold 2022 bytes; this one's 1011"):
        subscribe(subs, "c", target=Target("queue", "3"), policy=policy)
    subscribe(subs, "c", target=Target("queue", "3"))  # no policy: no bytes
    subs.unsubscribe("a")
    assert subs.policy_bytes == len(policy)
    subscribe(subs, "d", target=Target("queue", "4"), policy=policy)


def test_unknown_ids_are_refused():
    subs = Subscriptions()
    for bad in ("nope", 7, None):
        with pytest.raises(UnknownSubscriptionError):
            subs.get(bad)


def test_a_checkpoint_is_saved_only_once_its_sends_are_durable_and_at_most_once_a_second():
    subs = Subscriptions()
    s, _ = subscribe(subs)
    subs.take_events()
    s.cursors[0] = 10
    subs.progressed(s, needs=100)
    s.cursors[0] = 20
    subs.progressed(s, needs=200)
    assert subs.save_at(99) == math.inf
    subs.save(durable=99, now=0.0)
    assert subs.take_events() == [] and subs.pending
    assert subs.save_at(150) == -math.inf  # never saved: due at once
    subs.save(durable=150, now=0.0)
    assert subs.take_events() == [("cursor", "s1", [(0, 10)], 0, 0, 0, 0)]
    assert s.cursors == {0: 20}  # the live position runs ahead of the saved one
    assert subs.save_at(200) == SAVE_INTERVAL_S
    subs.save(durable=200, now=SAVE_INTERVAL_S / 2)
    assert subs.take_events() == []
    subs.save(durable=200, now=SAVE_INTERVAL_S)
    assert subs.take_events() == [("cursor", "s1", [(0, 20)], 0, 0, 0, 0)] and not subs.pending
    assert subs.save_at(10**9) == math.inf


def test_waiting_checkpoints_are_bounded():
    subs = Subscriptions()
    s, _ = subscribe(subs)
    for i in range(CHECKPOINTS_MAX * 4):
        s.cursors[0] = i
        subs.progressed(s, needs=i)
    assert len(s.checkpoints) == CHECKPOINTS_MAX
    subs.save(durable=10**9, now=0.0)
    assert subs.take_events()[-1][2] == [(0, CHECKPOINTS_MAX * 4 - 1)]


def test_a_deleted_topic_takes_its_subscriptions():
    subs = Subscriptions()
    subscribe(subs, "a")
    subscribe(subs, "b", topic="u")
    assert [s.id for s in subs.topic_deleted("t")] == ["a"]
    assert list(subs.by_id) == ["b"] and list(subs.by_topic) == ["u"]
