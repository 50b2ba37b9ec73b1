# Each algorithm's own meaning, on the worked examples of its docstring and of limits.md: GCRA's burst-then-rate
# bound and its equivalence with the token bucket, the shaping queue's FIFO constant-rate releases (nginx
# limit_req tables), Kafka's debt example, the fixed window's double burst at a boundary that the sliding log
# refuses, and the sliding window counter's estimates.
from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from millpond.broker.core.limits import (
    COST_EXCEEDS_CAPACITY,
    QUEUE_FULL,
    FixedWindow,
    LeakyBucket,
    SlidingLog,
    SlidingWindow,
    TokenBucket,
)
from examples.limits_plugin import CappedLeakyBucket
from limitkit import MS, S, max_in, traces


def hms(h: int, m: int, s: int) -> int:
    return ((h * 60 + m) * 60 + s) * S


# -- leaky bucket, meter form (GCRA) ---------------------------------------------------------------------------
def test_gcra_worked_example():
    lb = LeakyBucket(rate=10, burst=3)
    assert [lb.acquire("k", 1, 0).allowed for _ in range(3)] == [True, True, True]
    refused = lb.acquire("k", 1, 0)
    assert not refused.allowed and refused.retry_after_ns == 100 * MS
    assert lb.acquire("k", 1, 100 * MS).allowed
    assert lb.state_of("k") == 400 * MS * 10  # TAT, kept scaled by the rate's numerator


@settings(max_examples=100, deadline=None)
@given(rate=st.integers(1, 50), burst=st.integers(1, 8), data=st.data())
def test_gcra_and_token_bucket_make_identical_decisions(rate, burst, data):
    """P4: the leaky bucket as a meter and the token bucket of the same rate and capacity are the same limiter."""
    lb, tb = LeakyBucket(rate=rate, burst=burst), TokenBucket(rate=rate, burst=burst)
    for t, cost in data.draw(traces(burst)):
        a, b = lb.acquire("k", cost, t), tb.acquire("k", cost, t)
        assert (a.allowed, a.retry_after_ns, a.remaining) == (b.allowed, b.retry_after_ns, b.remaining)


@settings(max_examples=100, deadline=None)
@given(rate=st.sampled_from([1, 3, "7/2", 1000, 0.5]), burst=st.integers(1, 8), data=st.data())
def test_gcra_admits_at_most_rate_times_span_plus_burst(rate, burst, data):
    lb = LeakyBucket(rate=rate, burst=burst)
    r = Fraction(str(rate))
    admitted = [(t, c) for t, c in data.draw(traces(burst, max_size=80)) if lb.acquire("k", c, t).allowed]
    for span in (1, MS, S // 7, S, 5 * S):
        assert max_in(admitted, span) <= burst + r * Fraction(span, S)


@pytest.mark.parametrize("rate, burst", [(1000, 100), (3, 1), (Fraction(7, 2), 4)])
def test_a_saturating_sender_gets_exactly_the_rate(rate, burst):
    """P15: attempts every 1 ms for 10 s: admitted is between rate*(D - step) - 1 and burst + rate*D."""
    lb = LeakyBucket(rate=rate, burst=burst)
    span, step = 10 * S, MS
    admitted = sum(lb.acquire("k", 1, t).allowed for t in range(0, span + 1, step))
    assert rate * Fraction(span - step, S) - 1 <= admitted <= burst + rate * Fraction(span, S)


def test_fractional_rates_are_exact_even_at_large_clock_values():
    """limits.md 0.1: a float clock at epoch magnitude absorbs the increment; integers do not."""
    lb = LeakyBucket(rate=10_000_000, burst=1)
    now = 1_700_000_000 * S
    assert lb.acquire("k", 1, now).allowed
    refused = lb.acquire("k", 1, now)
    assert not refused.allowed and refused.retry_after_ns == 100  # 1e7 per second: 100 ns apart


# -- leaky bucket, queue form (shaping) ------------------------------------------------------------------------
@pytest.mark.parametrize("nginx, burst, queue, delays_ms", [
    ("rate=10r/s burst=5", 1, 5, [0, 100, 200, 300, 400, 500, None, None]),
    ("rate=10r/s burst=5 nodelay", 6, 0, [0, 0, 0, 0, 0, 0, None, None]),
    ("rate=10r/s burst=5 delay=2", 3, 3, [0, 0, 0, 100, 200, 300, None, None]),
])
def test_shaping_matches_nginx_limit_req(nginx, burst, queue, delays_ms):
    """limits.md 1.4's table: eight requests at t=0 (None: refused, 503 in nginx)."""
    lb = LeakyBucket(rate=10, burst=burst, queue=queue, mode="shape" if queue else "reject")
    got = []
    for _ in delays_ms:
        d = lb.acquire("k", 1, 0)
        got.append(d.delay_ns // MS if d.allowed else None)
    assert got == delays_ms


def test_shaping_releases_in_fifo_order_at_the_constant_rate_and_refuses_when_full():
    lb = LeakyBucket(rate=4, burst=1, queue=3, mode="shape")  # T = 250 ms
    releases = [d.delay_ns for d in (lb.acquire("k", 1, 0) for _ in range(4))]
    assert releases == [0, 250 * MS, 500 * MS, 750 * MS]
    full = lb.acquire("k", 1, 0)
    assert not full.allowed and full.reason == QUEUE_FULL and full.retry_after_ns == 250 * MS
    assert not lb.acquire("k", 1, 250 * MS - 1).allowed
    late = lb.acquire("k", 1, 250 * MS)  # one left the queue: room for one, released right after the others
    assert late.allowed and 250 * MS + late.delay_ns == 1000 * MS


@settings(max_examples=100, deadline=None)
@given(burst=st.integers(1, 4), queue=st.integers(0, 6), data=st.data())
def test_shaped_releases_are_fifo_and_conform_to_the_meter(burst, queue, data):
    """P14: releases never overtake each other, wait at most queue*T, and all pass a meter GCRA(rate, burst)."""
    rate = 5
    shaper = LeakyBucket(rate=rate, burst=burst, queue=queue, mode="shape" if queue else "reject")
    meter = LeakyBucket(rate=rate, burst=burst)
    last_release = None
    for t, cost in data.draw(traces(burst)):
        d = shaper.acquire("k", cost, t)
        if not d.allowed:
            continue
        release = t + d.delay_ns
        assert d.delay_ns <= queue * S // rate
        assert last_release is None or release >= last_release
        last_release = release
        assert meter.acquire("k", cost, release).allowed


# -- token bucket ----------------------------------------------------------------------------------------------
def test_token_bucket_worked_example():
    tb = TokenBucket(rate=2, burst=4)
    assert tb.acquire("k", 3, 0).allowed
    refused = tb.acquire("k", 2, S // 4)
    assert not refused.allowed and refused.retry_after_ns == S // 4 and refused.remaining == 1
    assert tb.acquire("k", 2, S // 2).allowed


def test_token_bucket_debt_mode_is_kafkas_quota_bucket():
    """KIP-599's example: quota 5/s, burst 500; a burst of 560 is admitted and leaves -60: 12 s of throttling."""
    tb = TokenBucket(rate=5, burst=500, debt=True)
    assert tb.capacity is None
    assert tb.acquire("k", 560, 0).allowed
    refused = tb.acquire("k", 1, 0)
    assert not refused.allowed and refused.retry_after_ns == 12 * S
    assert not tb.acquire("k", 1, 12 * S - 1).allowed
    assert tb.acquire("k", 10**9, 12 * S).allowed  # any cost fits once the debt is repaid


def test_token_bucket_debt_mode_can_cap_a_single_cost():
    tb = TokenBucket(rate=5, burst=500, debt=True, max_cost=1000)
    d = tb.acquire("k", 1001, 0)
    assert d.reason == COST_EXCEEDS_CAPACITY and d.max_cost == 1000


def test_token_bucket_idle_time_is_not_credited_twice():
    """B27 (celery/kombu #2652): the refill clock moves even when the bucket is full."""
    tb = TokenBucket(rate=1, burst=2)
    assert tb.acquire("k", 2, 100 * S).allowed
    assert not tb.acquire("k", 1, 100 * S).allowed
    assert tb.acquire("k", 1, 101 * S).allowed and not tb.acquire("k", 1, 101 * S).allowed


# -- fixed window vs sliding log -------------------------------------------------------------------------------
def test_fixed_window_admits_twice_the_limit_around_a_boundary_and_sliding_log_does_not():
    """100 per minute: 100 requests at 11:00:58 and 100 at 11:01:01."""
    fw, log = FixedWindow(limit=100, window_s=60), SlidingLog(limit=100, window_s=60)
    burst = [hms(11, 0, 58)] * 100 + [hms(11, 1, 1)] * 100
    fw_admitted = [(t, 1) for t in burst if fw.acquire("k", 1, t).allowed]
    assert len(fw_admitted) == 200 and max_in(fw_admitted, 3 * S + 1) == 200  # [58 s, 61 s]
    log_admitted = [(t, 1) for t in burst if log.acquire("k", 1, t).allowed]
    assert len(log_admitted) == 100 and max_in(log_admitted, 60 * S) == 100
    refused = log.acquire("k", 1, hms(11, 1, 1))
    assert refused.retry_after_ns == 57 * S  # the 11:00:58 entries leave the window at exactly 11:01:58


def test_fixed_window_worked_example():
    fw = FixedWindow(limit=3, window_s=10)
    assert all(fw.acquire("k", 1, s * S).allowed for s in (1, 2, 3))
    refused = fw.acquire("k", 1, 9 * S)
    assert not refused.allowed and refused.retry_after_ns == S
    assert fw.acquire("k", 1, 10 * S).allowed


@settings(max_examples=100, deadline=None)
@given(limit=st.integers(1, 8), window_s=st.integers(1, 5), data=st.data())
def test_window_bounds(limit, window_s, data):
    """P1, P3, P6: the log never exceeds the limit in any window; fixed and sliding windows never exceed twice it."""
    w = window_s * S
    trace = data.draw(traces(limit, max_size=60))
    for cls, factor in ((SlidingLog, 1), (FixedWindow, 2), (SlidingWindow, 2)):
        lim = cls(limit=limit, window_s=window_s)
        admitted = [(t, c) for t, c in trace if lim.acquire("k", c, t).allowed]
        assert max_in(admitted, w) <= factor * limit, cls.name
        if cls is FixedWindow:  # and each aligned window holds at most the limit
            per_window: dict[int, int] = {}
            for t, c in admitted:
                per_window[t // w] = per_window.get(t // w, 0) + c
            assert max(per_window.values(), default=0) <= limit


def test_sliding_log_window_is_half_open_and_worked_example():
    log = SlidingLog(limit=3, window_s=10)
    assert all(log.acquire("k", 1, s * S).allowed for s in (1, 2, 3))
    refused = log.acquire("k", 1, 9 * S)
    assert refused.retry_after_ns == 2 * S  # the entry at 1 s leaves at exactly 11 s
    assert not log.acquire("k", 1, 11 * S - 1).allowed
    assert log.acquire("k", 1, 11 * S).allowed
    assert log.acquire("k", 1, 23 * S // 2).retry_after_ns == S // 2


def test_sliding_log_keeps_one_entry_per_instant():
    log = SlidingLog(limit=1000, window_s=1)
    for _ in range(500):
        log.acquire("k", 1, 5 * S)
    assert log.state_of("k").entries == [(5 * S, 500)]


@settings(max_examples=100, deadline=None)
@given(limit=st.integers(1, 8), data=st.data())
def test_traffic_the_exact_log_accepts_is_never_refused_by_buckets_or_fixed_window(limit, data):
    """P5: no false refusals for the exact meters of the same limit."""
    log = SlidingLog(limit=limit, window_s=1)
    conformant = [(t, c) for t, c in data.draw(traces(limit)) if log.acquire("k", c, t).allowed]
    for lim in (TokenBucket(rate=limit, burst=limit), LeakyBucket(rate=limit, burst=limit),
                FixedWindow(limit=limit, window_s=1)):
        assert all(lim.acquire("k", c, t).allowed for t, c in conformant), lim.name


# -- sliding window counter ------------------------------------------------------------------------------------
def _swc_with(limit: int, window_s: int, prev: int, cur: int, elapsed_ns: int) -> tuple[SlidingWindow, int]:
    sw = SlidingWindow(limit=limit, window_s=window_s)
    w = window_s * S
    start = 10 * w
    if prev:
        assert sw.acquire("k", prev, start - w).allowed
    if cur:
        assert sw.acquire("k", cur, start).allowed
    return sw, start + elapsed_ns


def test_sliding_window_reproduces_cloudflares_example():
    """42 in the previous minute, 18 in this one, 15 s in: 42 * 45/60 + 18 = 49.5; limit 50 refuses one more."""
    sw, now = _swc_with(limit=60, window_s=60, prev=42, cur=18, elapsed_ns=15 * S)
    num, den = sw.estimate(sw.state_of("k"), now)
    assert Fraction(num, den) == Fraction(99, 2)
    sw50, now = _swc_with(limit=50, window_s=60, prev=42, cur=0, elapsed_ns=15 * S)
    assert sw50.acquire("k", 18, now).allowed and not sw50.acquire("k", 1, now).allowed


def test_sliding_window_estimate_half_way_with_previous_150_and_current_40():
    """The formula prev*(1 - elapsed/W) + current at 50 %: 150*0.5 + 40 = 115. (The issue's "95" does not follow
    from these numbers: 95 is what 110 previous and 40 current give half-way; both are pinned here.)"""
    for prev, expected in ((150, 115), (110, 95)):
        sw, now = _swc_with(limit=1000, window_s=60, prev=prev, cur=40, elapsed_ns=30 * S)
        num, den = sw.estimate(sw.state_of("k"), now)
        assert Fraction(num, den) == expected


def test_sliding_window_false_refusal_known_counterexample():
    """limits.md 1.7: limit 10 per 60 s, 10 at t=0; at 61 s the exact window (1 s, 61 s] holds nothing, but the
    estimate 10 * 59/60 + 1 exceeds 10: refused until 66 s (where 10 * 54/60 + 1 = 10). (``limits`` floors the
    weighted term and admits one; the exact comparison refuses it.)"""
    sw = SlidingWindow(limit=10, window_s=60)
    assert sw.acquire("k", 10, 0).allowed
    refused = sw.acquire("k", 1, 61 * S)
    assert not refused.allowed and refused.retry_after_ns == 5 * S
    log = SlidingLog(limit=10, window_s=60)
    assert log.acquire("k", 10, 0).allowed and log.acquire("k", 1, 61 * S).allowed  # the exact log admits it
    assert sw.acquire("k", 1, 66 * S).allowed


# -- the example plug-in ---------------------------------------------------------------------------------------
def test_plugin_worked_example():
    lim = CappedLeakyBucket(rate=1, burst=2, cap=3, period_s=60)
    assert lim.acquire("k", 1, 0).allowed and lim.acquire("k", 1, 0).allowed
    assert lim.acquire("k", 1, 0).retry_after_ns == S
    assert lim.acquire("k", 1, S).allowed
    capped = lim.acquire("k", 1, 30 * S)
    assert not capped.allowed and capped.retry_after_ns == 30 * S
    assert lim.acquire("k", 1, 60 * S).allowed


def test_bad_parameters_are_refused():
    for make in (lambda: LeakyBucket(rate=0), lambda: LeakyBucket(rate=1, burst=0),
                 lambda: LeakyBucket(rate=1, queue=2), lambda: TokenBucket(rate="x"),
                 lambda: TokenBucket(rate=1, max_cost=3), lambda: FixedWindow(limit=1, window_s=-1),
                 lambda: SlidingLog(limit=True, window_s=1), lambda: SlidingWindow(limit=1, window_s=1, mode="shape")):
        with pytest.raises(ValueError):
            make()
