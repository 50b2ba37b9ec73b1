# Shared helpers for the limiter tests: every algorithm under contract (the example plug-in included) with the
# numbers the contract needs, hypothesis strategies for (time, cost) traces, and exact window counting.
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

from hypothesis import strategies as st

from millpond.broker.core.limits import FixedWindow, LeakyBucket, SlidingLog, SlidingWindow, TokenBucket
from examples.limits_plugin import CappedLeakyBucket

S = 1_000_000_000  # one second in ns
MS = 1_000_000


@dataclass(frozen=True)
class Contract:
    id: str
    make: Callable[..., Any]  # make(**overrides) -> a fresh limiter
    at_once: int  # unit requests a fresh key gets admitted at one instant (away from window boundaries)
    capacity: int  # largest single cost
    bound: Callable[[int, int], Fraction]  # bound(span_ns, largest cost in the trace): admitted cost in any (s, s+span]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _bucket_bound(rate: Fraction, burst: int, extra: bool = False) -> Callable[[int, int], Fraction]:
    return lambda span, big: burst + rate * Fraction(span, S) + (big if extra else 0)


def _window_bound(limit: int, window_ns: int, factor: int) -> Callable[[int, int], Fraction]:
    return lambda span, big: Fraction(factor * limit * max(1, _ceil_div(span, window_ns)))


CONTRACTS = [
    # rate 7/2 per second: T = 285714285.71... ns, not a whole number of ns, so exactness is exercised
    Contract("leaky_bucket", lambda **kw: LeakyBucket(rate="7/2", burst=4, **kw), 4, 4,
             _bucket_bound(Fraction(7, 2), 4)),
    Contract("leaky_bucket_shape", lambda **kw: LeakyBucket(rate=3, burst=2, queue=3, mode="shape", **kw), 5, 2,
             _bucket_bound(Fraction(3), 5)),  # admissions (not releases): burst + queue up front
    Contract("token_bucket", lambda **kw: TokenBucket(rate=3, burst=4, **kw), 4, 4, _bucket_bound(Fraction(3), 4)),
    Contract("token_bucket_debt", lambda **kw: TokenBucket(rate=3, burst=4, debt=True, max_cost=6, **kw), 5, 6,
             _bucket_bound(Fraction(3), 4, extra=True)),
    Contract("fixed_window", lambda **kw: FixedWindow(limit=4, window_s=1, **kw), 4, 4, _window_bound(4, S, 2)),
    Contract("sliding_log", lambda **kw: SlidingLog(limit=4, window_s=1, **kw), 4, 4, _window_bound(4, S, 1)),
    Contract("sliding_window", lambda **kw: SlidingWindow(limit=4, window_s=1, **kw), 4, 4, _window_bound(4, S, 2)),
    Contract("plugin_capped_leaky_bucket",
             lambda **kw: CappedLeakyBucket(rate=3, burst=4, cap=9, period_s=5, **kw), 4, 4,
             _bucket_bound(Fraction(3), 4)),
]
IDS = [c.id for c in CONTRACTS]


def traces(capacity: int, max_size: int = 40) -> st.SearchStrategy[list[tuple[int, int]]]:
    """Non-decreasing (time_ns, cost) lists: same-instant bursts, steps landing on whole ms and seconds, +-1 ns."""
    step = st.one_of(
        st.just(0),
        st.integers(0, 400).map(lambda ms: ms * MS),
        st.sampled_from([S - 1, S, S + 1, S // 2, 3 * S]),
        st.integers(0, 2 * S),
    )
    return st.lists(st.tuples(step, st.integers(1, capacity)), min_size=1, max_size=max_size).map(_accumulate)


def _accumulate(steps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    t = 7 * S // 4  # away from zero and from window boundaries
    out = []
    for dt, cost in steps:
        t += dt
        out.append((t, cost))
    return out


def max_in(admitted: list[tuple[int, int]], span: int) -> int:
    """Largest admitted cost inside any half-open interval (s, s + span] (admitted sorted by time)."""
    best = total = j = 0
    for t, cost in admitted:
        total += cost
        while admitted[j][0] <= t - span:
            total -= admitted[j][1]
            j += 1
        best = max(best, total)
    return best
