# The limiter contract (limits.md sections 0 and 4), run over every algorithm, the example plug-in included:
# exact admit/refuse at the limit, retry-after sound and minimal, cost over capacity is an immediate distinct
# answer, a clock going backwards gives no credit, refusals consume nothing, peek equals acquire, sweeping and
# other keys change nothing, the key cap holds, and several policies are all-or-nothing.
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from millpond.broker.core.limits import ALGORITHMS, COST_EXCEEDS_CAPACITY, QUEUE_FULL, RATE, Algorithm, PolicySet
from limitkit import CONTRACTS, IDS, MS, S, max_in, traces

T0 = 7 * S // 4
contracts = pytest.mark.parametrize("c", CONTRACTS, ids=IDS)
FAST = settings(max_examples=60, deadline=None)


@contracts
def test_implements_the_protocol(c):
    assert isinstance(c.make(), Algorithm)


@contracts
def test_at_the_limit_one_under_one_over(c):
    lim = c.make()
    for i in range(c.at_once - 1):  # one under the limit
        assert lim.acquire("k", 1, T0).allowed, i
    assert lim.acquire("k", 1, T0).allowed  # exactly at the limit
    over = lim.acquire("k", 1, T0)  # one over
    assert not over.allowed and over.reason in (RATE, QUEUE_FULL) and over.retry_after_ns > 0
    assert over.retry_after_s == over.retry_after_ns / S and over.retry_after_ms >= over.retry_after_s * 1000


@contracts
def test_a_fresh_key_admits_its_capacity_at_once(c):
    lim = c.make()
    assert lim.acquire("k", c.capacity, T0).allowed
    assert lim.capacity == c.capacity


@contracts
@pytest.mark.parametrize("used", [0, 1])
def test_cost_over_capacity_is_an_immediate_distinct_answer(c, used):
    lim = c.make()
    if used:
        lim.acquire("k", 1, T0)
    before = lim.peek("k", 1, T0)
    for call in (lim.peek, lim.acquire):
        d = call("k", c.capacity + 1, T0)
        assert not d.allowed and d.reason == COST_EXCEEDS_CAPACITY
        assert d.max_cost == c.capacity and d.retry_after_ns is None and d.retry_after_s is None
    assert lim.peek("k", 1, T0) == before  # nothing charged
    assert len(lim) == used  # a never-fitting request on a new key tracks nothing


@contracts
@FAST
@given(data=st.data())
def test_retry_after_is_sound_and_minimal(c, data):
    trace = data.draw(traces(c.capacity))
    lim = c.make()
    for t, cost in trace:
        d = lim.acquire("k", cost, t)
        if not d.allowed:
            ra = d.retry_after_ns
            assert ra > 0
            assert lim.peek("k", cost, t + ra).allowed, "retrying at t + retry_after must succeed"
            assert not lim.peek("k", cost, t + ra - 1).allowed, "retrying 1 ns earlier must fail"


@contracts
def test_retry_after_after_exhaustion_is_exact_at_both_edges(c):
    lim = c.make()
    while lim.acquire("k", 1, T0).allowed:
        pass
    ra = lim.peek("k", 1, T0).retry_after_ns
    assert not lim.acquire("k", 1, T0 + ra - 1).allowed
    assert lim.acquire("k", 1, T0 + ra).allowed


@contracts
@FAST
@given(data=st.data())
def test_peek_answers_what_acquire_then_does(c, data):
    lim = c.make()
    for t, cost in data.draw(traces(c.capacity)):
        assert lim.peek("k", cost, t) == lim.acquire("k", cost, t)


@contracts
@FAST
@given(data=st.data())
def test_refusals_consume_nothing(c, data):
    """P9: replaying only the admitted requests on a fresh limiter gives the very same decisions."""
    lim = c.make()
    admitted = []
    for t, cost in data.draw(traces(c.capacity)):
        d = lim.acquire("k", cost, t)
        if d.allowed:
            admitted.append((t, cost, d))
    replay = c.make()
    for t, cost, d in admitted:
        assert replay.acquire("k", cost, t) == d


@contracts
@FAST
@given(data=st.data())
def test_clock_going_backwards_is_clamped_never_credit(c, data):
    """P10: a clock with backward steps gives exactly the decisions of its running maximum."""
    trace = data.draw(traces(c.capacity))
    backs = data.draw(st.lists(st.integers(0, 3 * S), min_size=len(trace), max_size=len(trace)))
    clamped, raw = c.make(), c.make()
    high = None
    for (t, cost), back in zip(trace, backs):
        jittered = t - back
        high = jittered if high is None else max(high, jittered)
        assert raw.acquire("k", cost, jittered) == clamped.acquire("k", cost, high)


@contracts
def test_time_going_back_after_exhaustion_gives_no_credit(c):
    lim = c.make()
    while lim.acquire("k", 1, 10 * S).allowed:
        pass
    at_ten = lim.peek("k", 1, 10 * S)
    for back in (5 * S, 0, -10 * S):
        d = lim.acquire("k", 1, back)
        assert not d.allowed and d.retry_after_ns == at_ten.retry_after_ns


@contracts
@FAST
@given(data=st.data())
def test_admitted_cost_never_exceeds_the_algorithms_bound(c, data):
    trace = data.draw(traces(c.capacity, max_size=60))
    lim = c.make()
    admitted = [(t, cost) for t, cost in trace if lim.acquire("k", cost, t).allowed]
    biggest = max((cost for _, cost in admitted), default=0)
    for span in (MS, S // 3, S // 2, S, 3 * S):
        assert max_in(admitted, span) <= c.bound(span, biggest), span


@contracts
@FAST
@given(data=st.data())
def test_sweeping_and_other_keys_change_no_decision(c, data):
    """P8 and P13: sweeping fresh keys at any moment, and traffic on other keys, never change a key's answers."""
    trace = data.draw(traces(c.capacity))
    noise = data.draw(st.lists(st.booleans(), min_size=len(trace), max_size=len(trace)))
    plain, busy = c.make(), c.make()
    for (t, cost), sweep in zip(trace, noise):
        if sweep:
            busy.sweep(t)
        busy.acquire("other", 1, t)
        assert busy.acquire("k", cost, t) == plain.acquire("k", cost, t)


@contracts
def test_idle_keys_become_fresh_and_are_dropped(c):
    lim = c.make()
    for i in range(20):
        lim.acquire(f"k{i}", 1, T0)
    assert len(lim) == 20
    assert lim.sweep(T0) == 0  # all live
    assert lim.sweep(T0 + 60 * S) == 20 and len(lim) == 0  # P17: after long idle, nothing tracked


@contracts
def test_sweep_can_be_bounded_and_starts_with_the_least_recently_used(c):
    lim = c.make()
    for i in range(10):
        lim.acquire(f"k{i}", 1, T0 + i * S)
    assert lim.sweep(T0 + 9 * S + 60 * S, max_checks=4) == 4
    assert lim.state_of("k3") is None and lim.state_of("k4") is not None


@contracts
def test_at_the_cap_fresh_keys_go_before_any_live_key_is_evicted(c):
    lim = c.make(max_keys=4)
    lim.acquire("old1", 1, T0)
    lim.acquire("old2", 1, T0)
    later = T0 + 60 * S  # old1 and old2 are fresh by now
    for key in ("live1", "live2"):
        while lim.acquire(key, 1, later).allowed:
            pass
    lim.acquire("new1", 1, later)
    lim.acquire("new2", 1, later)
    assert len(lim) == 4 and lim.evicted_live == 0
    assert lim.state_of("old1") is None and lim.state_of("old2") is None
    lim.acquire("new3", 1, later)  # nothing fresh left: the least recently used live key is evicted
    assert len(lim) == 4 and lim.evicted_live == 1 and lim.state_of("live1") is None


@contracts
def test_the_key_cap_holds_and_an_evicted_key_is_forgiven(c):
    lim = c.make(max_keys=3)
    while lim.acquire("first", 1, T0).allowed:
        pass
    for i in range(5):
        lim.acquire(f"k{i}", 1, T0)
        assert len(lim) <= 3
    assert lim.evicted_live == 3
    assert lim.state_of("first") is None
    assert lim.acquire("first", 1, T0).allowed  # forgiven: a fresh key again


@contracts
def test_recently_refused_keys_are_kept_over_idle_ones(c):
    lim = c.make(max_keys=2)
    lim.acquire("a", 1, T0)
    while lim.acquire("b", 1, T0).allowed:
        pass
    lim.acquire("a", 1, T0)  # a used again: b is now the least recently used
    lim.acquire("b", 1, T0)  # b refused, but touched
    lim.acquire("c", 1, T0)  # evicts a, not b
    assert lim.state_of("b") is not None and lim.state_of("a") is None


@contracts
def test_several_policies_are_all_or_nothing(c, monkeypatch):
    """P12: beside another policy, a refusal by either charges neither, and retry_after is the largest among the
    refusers."""
    def policy_set(other_burst):
        monkeypatch.setitem(ALGORITHMS, f"contract_{c.id}", type(c.make()))
        params = dict(PARAMS[c.id])
        return PolicySet([
            {"name": "mine", "scope": "client", "unit": "records", "algorithm": f"contract_{c.id}",
             "mode": params.pop("mode", "reject"), "params": params},
            {"name": "other", "scope": "global", "unit": "requests", "params": {"rate": 1, "burst": other_burst}},
        ])

    # the other policy refuses: mine is not charged
    ps = policy_set(other_burst=2)
    mine, other = ps._active["mine"].algorithm, ps._active["other"].algorithm
    assert ps.admit(T0, client_id="a", records=1).allowed and ps.admit(T0, client_id="a", records=1).allowed
    before = mine.peek("a", 1, T0)
    refused = ps.admit(T0, client_id="a", records=1)
    assert not refused.allowed and refused.policy == "other" and refused.retry_after_ns == S
    assert mine.peek("a", 1, T0) == before

    # mine refuses: the other is not charged
    ps = policy_set(other_burst=100)
    mine, other = ps._active["mine"].algorithm, ps._active["other"].algorithm
    while ps.admit(T0, client_id="b", records=1).allowed:
        pass
    before = other.peek("", 1, T0)
    refused = ps.admit(T0, client_id="b", records=1)
    assert not refused.allowed and refused.policy == "mine"
    assert refused.retry_after_ns == mine.peek("b", 1, T0).retry_after_ns
    assert other.peek("", 1, T0) == before

    # both refuse: the larger retry-after wins
    ps = policy_set(other_burst=1)
    mine, other = ps._active["mine"].algorithm, ps._active["other"].algorithm
    assert ps.admit(T0, client_id="c", records=c.capacity).allowed
    while mine.peek("c", c.capacity, T0).allowed:
        mine.acquire("c", c.capacity, T0)
    refused = ps.admit(T0, client_id="c", records=c.capacity)
    expected = max(mine.peek("c", c.capacity, T0).retry_after_ns, other.peek("", 1, T0).retry_after_ns)
    assert not refused.allowed and refused.retry_after_ns == expected
    assert ps.statistics()["mine"].throttled == 1 and ps.statistics()["other"].throttled == 1


PARAMS = {
    "leaky_bucket": {"rate": "7/2", "burst": 4},
    "leaky_bucket_shape": {"rate": 3, "burst": 2, "queue": 3, "mode": "shape"},
    "token_bucket": {"rate": 3, "burst": 4},
    "token_bucket_debt": {"rate": 3, "burst": 4, "debt": True, "max_cost": 6},
    "fixed_window": {"limit": 4, "window_s": 1},
    "sliding_log": {"limit": 4, "window_s": 1},
    "sliding_window": {"limit": 4, "window_s": 1},
    "plugin_capped_leaky_bucket": {"rate": 3, "burst": 4, "cap": 9, "period_s": 5},
}
