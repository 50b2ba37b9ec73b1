# The window-counting limiters: fixed window, sliding log and sliding window (weighted counter). Each allows
# ``limit`` units per ``window_s``. Integer arithmetic only. Windows are aligned to multiples of the window length
# on the clock the caller passes in. Must not know about policies, units or the server.
from __future__ import annotations

from typing import Any

from millpond.broker.core.limits.base import (
    DEFAULT_MAX_KEYS,
    Decision,
    KeyedAlgorithm,
    admitted,
    positive_int,
    refused,
    seconds_to_ns,
)


class _WindowAlgorithm(KeyedAlgorithm):
    def __init__(self, *, limit: int, window_s: Any, mode: str = "reject", max_keys: int = DEFAULT_MAX_KEYS) -> None:
        super().__init__(mode=mode, max_keys=max_keys)
        self.limit = positive_int(limit, "limit")
        self.window_ns = seconds_to_ns(window_s, "window_s")
        self.capacity = self.limit


class FixedWindow(_WindowAlgorithm):
    """Fixed window counter: one counter per aligned window ``[k*W, (k+1)*W)`` (limits.md section 1.5)::

        k = floor(t / W); admit iff count_k + n <= limit
        else retry_after = (k+1)*W - t          (the next window starts empty)

    Cheap (two integers per key) but it lets up to twice the limit through around a boundary: with 100 per
    minute, 100 requests at 11:00:58 and 100 more at 11:01:01 are all admitted, 200 within three seconds. Any one
    aligned window never holds more than ``limit``; any interval of length W holds at most ``2*limit``.

    Worked example: ``limit=3, window_s=10``. Requests at 1 s, 2 s, 3 s are admitted; at 9 s refused with
    ``retry_after = 1 s``; at 10 s admitted (new window).
    """

    name = "fixed_window"

    def decide(self, state: Any, cost: int, now_ns: int, charge: bool) -> tuple[Decision, Any]:
        w = self.window_ns
        k = now_ns // w
        count = state[1] if state is not None and state[0] == k else 0
        if count + cost > self.limit:
            return refused((k + 1) * w - now_ns, self.limit - count), state
        return admitted(self.limit - count - cost), (k, count + cost)

    def is_fresh(self, state: Any, now_ns: int) -> bool:
        return state[0] < now_ns // self.window_ns or state[1] == 0


class _Log:
    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: list[tuple[int, int]] = []  # (time_ns, cost), oldest first; one entry per instant
        self.total = 0  # sum of the costs in entries


class SlidingLog(_WindowAlgorithm):
    """Sliding log: exact; remembers each admitted request ``(time, cost)`` for one window (limits.md 1.6).

    The window is half-open, ``(t - W, t]``: a request admitted at ``s`` stops counting at exactly ``s + W``
    (``limits`` and PyrateLimiter count it one instant longer, PyrateLimiter PR #289)::

        admit iff (cost of entries with s > t - W) + n <= limit
        else retry_after = s_m + W - t, where s_m is the entry whose expiry frees enough room

    Admitted cost in *any* interval of length W never exceeds ``limit``. Memory grows with the number of distinct
    admission instants in a window (same-instant requests share one entry), so use it for small limits.

    Worked example: ``limit=3, window_s=10``. Requests at 1 s, 2 s, 3 s are admitted; at 9 s refused with
    ``retry_after = 2 s`` (the 1 s entry leaves the window at 11 s); at 11 s admitted; at 11.5 s refused
    (``retry_after = 0.5 s``).
    """

    name = "sliding_log"

    def decide(self, state: Any, cost: int, now_ns: int, charge: bool) -> tuple[Decision, Any]:
        horizon = now_ns - self.window_ns  # entries at or before it are out of the window
        live = 0
        first = 0
        if state is not None:
            entries = state.entries
            live = state.total
            while first < len(entries) and entries[first][0] <= horizon:
                live -= entries[first][1]
                first += 1
            if charge and first:  # only a charging call may prune: it has moved the clamp's high-water mark
                del entries[:first]
                state.total = live
                first = 0
        if live + cost > self.limit:
            excess = live + cost - self.limit
            entries = state.entries
            i = first
            freed = 0
            while True:  # terminates: the live entries hold `live` >= excess
                freed += entries[i][1]
                if freed >= excess:
                    break
                i += 1
            return refused(entries[i][0] + self.window_ns - now_ns, self.limit - live), state
        if not charge:
            return admitted(self.limit - live - cost), state
        if state is None:
            state = _Log()
        if cost:
            entries = state.entries
            if entries and entries[-1][0] == now_ns:
                entries[-1] = (now_ns, entries[-1][1] + cost)
            else:
                entries.append((now_ns, cost))
            state.total = live + cost
        return admitted(self.limit - live - cost), state

    def is_fresh(self, state: Any, now_ns: int) -> bool:
        return not state.entries or state.entries[-1][0] <= now_ns - self.window_ns


class SlidingWindow(_WindowAlgorithm):
    """Sliding window counter (Cloudflare, "How we built rate limiting capable of scaling to millions of
    domains", 2017): counters for the previous and the current aligned window, the previous one weighted by how
    much of it the rolling window still overlaps (limits.md section 1.7)::

        estimate = prev * (1 - elapsed/W) + current
        admit iff estimate + n <= limit       (compared exactly: prev*(W - elapsed) + (current + n)*W <= limit*W)

    Worked examples: Cloudflare's, limit 50 per minute, 42 in the previous minute, 18 in this one, 15 s into it:
    ``42 * 45/60 + 18 = 49.5``, so one more request (50.5) is refused. Previous 150, current 40, half-way: 115.

    An approximation: two windows of state per key, no burst concentration like the fixed window, but up to
    ``2*limit`` in one window length for an adversary, and it can refuse a request the exact log would admit
    (limit 10 per 60 s, 10 at t=0: at 61 s the estimate is 10*59/60 + 1 > 10, refused until 66 s, though the
    exact window (1 s, 61 s] holds nothing).
    ``retry_after`` is exact for this estimate (it only decreases while no request arrives).
    """

    name = "sliding_window"

    def _counts(self, state: Any, k: int) -> tuple[int, int]:
        if state is None:
            return 0, 0
        sk, prev, cur = state
        if sk == k:
            return prev, cur
        if sk == k - 1:
            return cur, 0
        return 0, 0

    def estimate(self, state: Any, now_ns: int) -> tuple[int, int]:
        """The weighted count at ``now_ns`` as an exact fraction ``(numerator, W)``."""
        w = self.window_ns
        k = now_ns // w
        prev, cur = self._counts(state, k)
        return prev * (w - (now_ns - k * w)) + cur * w, w

    def decide(self, state: Any, cost: int, now_ns: int, charge: bool) -> tuple[Decision, Any]:
        w = self.window_ns
        limit = self.limit
        k = now_ns // w
        start = k * w
        prev, cur = self._counts(state, k)
        weighted_prev = prev * (w - (now_ns - start))
        room = limit * w - weighted_prev - (cur + cost) * w
        if room >= 0:
            return admitted(room // w), (k, prev, cur + cost)
        spare = limit - cur - cost  # units left if the previous window no longer weighed anything
        if spare >= 0:  # fits later in this window, once prev*(W - e) <= spare*W
            at = start + -(-(prev - spare) * w // prev)
        else:  # fits in the next window, once cur*(W - e) <= (limit - cost)*W
            at = start + w + -(-(cur - (limit - cost)) * w // cur)
        remaining = (limit * w - weighted_prev - cur * w) // w
        return refused(at - now_ns, remaining if remaining > 0 else 0), state

    def is_fresh(self, state: Any, now_ns: int) -> bool:
        return self._counts(state, now_ns // self.window_ns) == (0, 0)
