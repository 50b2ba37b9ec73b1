# The token bucket: refill at a rate up to a capacity, optionally going into debt (Kafka's quota token bucket).
# Integer arithmetic only. Must not know about policies, units or the server.
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
)


class TokenBucket(KeyedAlgorithm):
    """Token bucket with ``rate`` (tokens per second) and ``burst`` (capacity, tokens); a unit of cost is a token.

    A new key starts full (as Envoy: "max_tokens ... is also the number of tokens that the bucket initially
    contains"). State per key: ``(tokens, last)``; refill is lazy, from the elapsed time (limits.md section 1.2)::

        b = min(burst, b + rate*(t - last)); last = t
        admit iff n <= b  (then b -= n)
        else retry_after = (n - b)/rate     (partial tokens count, bucket4j #88)

    Over any interval of length D it admits at most ``burst + rate*D``; it makes the same decisions as the GCRA
    leaky bucket with the same rate and burst. A key is fresh once its bucket has refilled.

    Worked example: ``rate=2, burst=4``. At t=0 a request of 3 is admitted (1 token left); at t=0.25 s a request
    of 2 finds 1.5 tokens: refused, ``retry_after = 0.25 s``; at t=0.5 s it finds 2 and is admitted.

    **Debt mode** (``debt=True``), the token bucket of Kafka's quotas (KIP-599, ``TokenBucket.java``): a request
    is admitted whenever the balance is not negative, whatever its cost, and the balance may go below zero;
    while negative, requests are refused with ``retry_after = -b/rate``. This lets a large byte batch through and
    then throttles the sender until the debt is repaid. Kafka's example: rate 5/s, burst 500, a burst of 560 is
    admitted and leaves -60: refused for 12 s. ``max_cost`` optionally caps a single request in debt mode (without
    it any cost fits); over any interval D it admits at most ``burst + rate*D + (the largest single cost)``.

    Arithmetic: the rate is an exact fraction p/q; one token is q*1e9 "scaled tokens" and refill is p scaled
    tokens per ns, so everything is an integer.
    """

    name = "token_bucket"

    def __init__(self, *, rate: Any, burst: int = 1, debt: bool = False, max_cost: int | None = None,
                 mode: str = "reject", max_keys: int = DEFAULT_MAX_KEYS) -> None:
        super().__init__(mode=mode, max_keys=max_keys)
        r = positive_fraction(rate, "rate")
        self.burst = positive_int(burst, "burst")
        if not isinstance(debt, bool):
            raise ValueError(f"debt must be true or false, got {debt!r}")
        self.debt = debt
        if max_cost is not None:
            if not debt:
                raise ValueError("max_cost applies to debt mode only (otherwise the burst is the largest cost)")
            max_cost = positive_int(max_cost, "max_cost")
        self.capacity = max_cost if debt else self.burst
        self._p = r.numerator  # refill per ns, in scaled tokens
        self._unit = r.denominator * NS_PER_S  # one token, in scaled tokens
        self._full = self.burst * self._unit

    def decide(self, state: Any, cost: int, now_ns: int, charge: bool) -> tuple[Decision, Any]:
        unit = self._unit
        if state is None:
            tokens = self._full
        else:
            tokens, last = state
            tokens += (now_ns - last) * self._p
            if tokens > self._full:
                tokens = self._full
        need = cost * unit
        if self.debt:
            if tokens < 0:
                return refused(-(tokens // self._p), 0), state
        elif need > tokens:
            return refused(-((tokens - need) // self._p), tokens // unit), state
        left = tokens - need
        return admitted(left // unit if left > 0 else 0), (left, now_ns)

    def is_fresh(self, state: Any, now_ns: int) -> bool:
        tokens, last = state
        return tokens + (now_ns - last) * self._p >= self._full
