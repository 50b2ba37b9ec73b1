# An example third-party limit algorithm: a leaky bucket (GCRA) with a daily cap. It shows the plug-in interface
# (broker.core.limits.base.Algorithm, here through the KeyedAlgorithm helper) and passes the broker's limiter
# contract suite. The broker's operator makes it available (a client never can): in the config file as
#  [limit_algorithms] capped = "examples.limits_plugin:CappedLeakyBucket", with
#  millpond serve --limit-algorithm capped=examples.limits_plugin:CappedLeakyBucket, or from a package's pyproject.toml:
#
#     [project.entry-points."millpond.limits"]
#     capped_leaky_bucket = "examples.limits_plugin:CappedLeakyBucket"
#
# Must not know about the broker beyond that interface.
from __future__ import annotations

from typing import Any

from millpond.broker.core.limits.base import (
    DEFAULT_MAX_KEYS,
    NS_PER_S,
    Decision,
    KeyedAlgorithm,
    admitted,
    positive_fraction,
    positive_int,
    refused,
    seconds_to_ns,
)


class CappedLeakyBucket(KeyedAlgorithm):
    """A leaky bucket (GCRA: ``rate`` units per second, ``burst`` at once) that also admits at most ``cap`` units
    per aligned period of ``period_s`` seconds (default one day), like an API plan with "10 per second, 10,000
    per day". A request is admitted only if both admit; then both are charged.

    ``retry_after`` is the later of the two waits: each condition, once true, stays true while nothing else
    arrives, so the first instant at which both hold is the later of the two first instants.

    Worked example: ``rate=1, burst=2, cap=3, period_s=60``. At t=0 two requests pass (burst), a third is refused
    with ``retry_after = 1 s``; at t=1 s it passes, and the daily cap is reached: at t=30 s a request fits the
    bucket but not the cap: refused with ``retry_after = 30 s`` (the next period starts at 60 s).

    State per key: ``(tat, period_index, used)``, all integers; fresh once the bucket has drained and the period
    is over. The largest single cost is ``min(burst, cap)``.
    """

    name = "capped_leaky_bucket"

    def __init__(self, *, rate: Any, burst: int = 1, cap: int, period_s: Any = 86_400, mode: str = "reject",
                 max_keys: int = DEFAULT_MAX_KEYS) -> None:
        super().__init__(mode=mode, max_keys=max_keys)
        r = positive_fraction(rate, "rate")
        self.burst = positive_int(burst, "burst")
        self.cap = positive_int(cap, "cap")
        self.period_ns = seconds_to_ns(period_s, "period_s")
        self.capacity = min(self.burst, self.cap)
        self._p = r.numerator  # GCRA times are kept as ns * p, so the emission interval q*1e9 is an integer
        self._t = r.denominator * NS_PER_S
        self._tolerance = self.burst * self._t

    def decide(self, state: Any, cost: int, now_ns: int, charge: bool) -> tuple[Decision, Any]:
        p, t = self._p, self._t
        now = now_ns * p
        period = now_ns // self.period_ns
        tat, used = now, 0
        if state is not None:
            tat = max(state[0], now)
            if state[1] == period:
                used = state[2]
        new_tat = tat + cost * t
        bucket_wait_ns = max(0, -((now + self._tolerance - new_tat) // p))
        cap_wait_ns = (period + 1) * self.period_ns - now_ns if used + cost > self.cap else 0
        if bucket_wait_ns or cap_wait_ns:
            remaining = min((self._tolerance - (tat - now)) // t, self.cap - used)
            return refused(max(bucket_wait_ns, cap_wait_ns), max(0, remaining)), state
        remaining = min((self._tolerance - (new_tat - now)) // t, self.cap - used - cost)
        return admitted(remaining), (new_tat, period, used + cost)

    def is_fresh(self, state: Any, now_ns: int) -> bool:
        return state[0] <= now_ns * self._p and (state[1] < now_ns // self.period_ns or state[2] == 0)
