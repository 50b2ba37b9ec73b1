# The leaky bucket, the broker's default limiter: the meter form (GCRA, one integer per key) that refuses, and the
# queue form (shaping) that answers "admit, released at now + delay" or "queue full". Integer arithmetic only.
# Must not know about policies, the server, or how a delayed request is made to wait.
from __future__ import annotations

from typing import Any, Hashable

from millpond.broker.core.limits.base import (
    DEFAULT_MAX_KEYS,
    NS_PER_S,
    QUEUE_FULL,
    RATE,
    Decision,
    KeyedAlgorithm,
    admitted,
    never,
    non_negative_int,
    positive_fraction,
    positive_int,
    refused,
)


class LeakyBucket(KeyedAlgorithm):
    """Leaky bucket with ``rate`` (units per second) and ``burst`` (capacity, units).

    **Meter form** (``mode="reject"``, the default) is GCRA, the generic cell rate algorithm (ITU-T I.371, as in
    brandur/redis-cell and throttled's ``GCRARateLimiter``): one number per key, the theoretical arrival time TAT.
    With emission interval ``T = 1/rate`` and a request of cost ``n`` at ``t``::

        new_tat = max(TAT, t) + n*T
        admit iff new_tat - t <= burst*T        (then TAT = new_tat)
        else retry_after = new_tat - burst*T - t

    It admits ``burst`` units at once, then ``rate`` per second; over any interval of length D it admits at most
    ``burst + rate*D``. It makes the same decisions as a token bucket of the same rate and capacity
    (limits.md P4). A key is fresh once ``TAT <= now``.

    Worked example: ``rate=10`` (T = 100 ms), ``burst=3``. At t=0 three requests are admitted (TAT 100, 200,
    300 ms); a fourth at t=0 needs new_tat 400 ms - 300 ms = 100 ms > 0: refused, ``retry_after = 100 ms``. At
    t=100 ms it is admitted (new_tat 400 ms, 400 - 100 = 300 ms = burst*T).

    **Queue form** (``mode="shape"``) is the leaky bucket as a queue with nginx ``limit_req`` semantics: ``burst``
    units pass undelayed, up to ``queue`` more units wait in FIFO order and leave one ``T`` apart, overflow is
    refused (limits.md section 1.4)::

        new_tat = max(TAT, t) + n*T
        if new_tat - t > (burst + queue)*T: refuse, QUEUE_FULL (state unchanged)
        else TAT = new_tat; release at t + max(0, new_tat - t - burst*T)

    Each request is accounted when it is admitted (as nginx does), so releases are FIFO and never closer than the
    rate; a waiting request that is then abandoned keeps its charge. nginx ``burst=N delay=D`` is ``burst=D+1,
    queue=N-D``; ``nodelay`` is the meter form with ``burst=N+1``.

    Worked example (nginx ``rate=10r/s burst=5``, i.e. ``rate=10, burst=1, queue=5``): eight requests at t=0 are
    released at 0, 100, 200, 300, 400, 500 ms; the seventh and eighth are refused with QUEUE_FULL,
    ``retry_after = 100 ms`` (the queue has room for one more then).

    A cost above ``burst`` can never fit: COST_EXCEEDS_CAPACITY with ``max_cost = burst``, in both modes.
    Arithmetic: the rate is an exact fraction p/q; times are kept scaled by p so that T = q*1e9 is an integer.
    """

    name = "leaky_bucket"
    modes = ("reject", "shape")

    def __init__(self, *, rate: Any, burst: int = 1, queue: int = 0, mode: str = "reject",
                 max_keys: int = DEFAULT_MAX_KEYS) -> None:
        super().__init__(mode=mode, max_keys=max_keys)
        r = positive_fraction(rate, "rate")
        self.burst = positive_int(burst, "burst")
        self.queue = non_negative_int(queue, "queue")
        if mode == "reject" and queue:
            raise ValueError("queue is the shaping mode's bound: use mode='shape' or leave queue at 0")
        self.capacity = self.burst
        self._p = r.numerator  # times in "scaled ns": ns * p
        self._t = r.denominator * NS_PER_S  # emission interval T in scaled ns
        self._undelayed = self.burst * self._t  # burst * T: the meter's delay variation tolerance
        self._limit = (self.burst + self.queue) * self._t  # how far ahead TAT may run
        self._refusal = QUEUE_FULL if mode == "shape" else RATE
        self._constants = (self._p, self._t, self._limit, self._undelayed, self.burst)

    # acquire and peek replace KeyedAlgorithm's generic ones (and its decide hook): the default limiter's hot path,
    # written out with the constants unpacked from one tuple.
    def acquire(self, key: Hashable, cost: int, now_ns: int) -> Decision:
        if now_ns < self._high_water_ns:
            now_ns = self._high_water_ns
        else:
            self._high_water_ns = now_ns
        p, t, limit, undelayed, burst = self._constants
        if cost > burst:
            return never(burst)
        states = self._states
        now = now_ns * p
        tat = states.pop(key, None)  # re-inserted below, at the most recently used end
        new_tat = (now if tat is None or tat < now else tat) + cost * t
        ahead = new_tat - now
        if ahead > limit:  # never for a new key: cost*T <= burst*T <= limit
            states[key] = tat
            return refused(-((now + limit - new_tat) // p), max(0, (undelayed - tat + now) // t), self._refusal)
        if tat is None:
            self._track(key, new_tat, now_ns)
        else:
            states[key] = new_tat
        if ahead > undelayed:  # shaping only: wait in the queue
            return admitted(0, -((undelayed - ahead) // p))
        return admitted((undelayed - ahead) // t)

    def peek(self, key: Hashable, cost: int, now_ns: int) -> Decision:
        if now_ns < self._high_water_ns:
            now_ns = self._high_water_ns
        p, t, limit, undelayed, burst = self._constants
        if cost > burst:
            return never(burst)
        now = now_ns * p
        tat = self._states.get(key)
        new_tat = (now if tat is None or tat < now else tat) + cost * t
        ahead = new_tat - now
        if ahead > limit:
            return refused(-((now + limit - new_tat) // p), max(0, (undelayed - tat + now) // t), self._refusal)
        if ahead > undelayed:
            return admitted(0, -((undelayed - ahead) // p))
        return admitted((undelayed - ahead) // t)

    def is_fresh(self, state: Any, now_ns: int) -> bool:
        return state <= now_ns * self._p
