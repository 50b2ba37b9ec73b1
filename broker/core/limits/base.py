# The limiter contract: the Decision record, the Algorithm protocol every limiter (built-in or plug-in) follows,
# and KeyedAlgorithm, the helper base that owns per-key state (LRU order, hard cap, lazy expiry of fresh keys,
# clamping of a clock that goes backwards). Pure and synchronous: time is an integer ``now_ns`` passed in, never
# read. Must not know about policies, scopes, units, the wire protocol, the server or trio.
from __future__ import annotations

from fractions import Fraction
from typing import Any, ClassVar, Hashable, NamedTuple, Protocol, runtime_checkable

NS_PER_S = 1_000_000_000
DEFAULT_MAX_KEYS = 100_000  # tracked keys per algorithm instance before LRU eviction (an evicted key is forgiven)
_PROBES_AT_CAP = 8  # least recently used keys examined for fresh ones before a live key is evicted
_NEVER_SEEN_NS = -(1 << 62)

# Decision.reason values
ADMITTED = "admitted"
RATE = "rate"  # refused: over the rate; retry_after_ns says when the same request fits
QUEUE_FULL = "queue_full"  # shaping mode: the bounded queue is full; retry_after_ns says when it has room
COST_EXCEEDS_CAPACITY = "cost_exceeds_capacity"  # refused for good: max_cost is the largest cost that can fit
ERROR = "error"  # the algorithm raised (a plug-in bug); set by the policy layer, never by an algorithm


class Decision(NamedTuple):
    """The answer to one admission check.

    ``allowed``: admitted (and, for ``acquire``, charged). ``retry_after_ns``: 0 when admitted; when refused for
    ``RATE`` or ``QUEUE_FULL`` the smallest wait after which the same request is admitted if nothing else happens
    (sound and minimal: 1 ns earlier it is still refused); ``None`` when it can never be admitted.
    ``remaining``: whole units that could still be admitted at this instant after this decision (never negative).
    ``delay_ns``: shaping mode only: admitted, but to be released this long after ``now`` (the server waits).
    ``max_cost``: with ``COST_EXCEEDS_CAPACITY``, the largest cost that can ever be admitted. ``policy`` and
    ``unit`` are filled in by the policy layer: which policy decided, in which unit ``max_cost`` is counted.
    """

    allowed: bool
    retry_after_ns: int | None
    remaining: int
    delay_ns: int = 0
    reason: str = ADMITTED
    max_cost: int | None = None
    policy: str | None = None
    unit: str | None = None
    message: str = ""

    @property
    def retry_after_s(self) -> float | None:
        """Seconds to wait (float), ``0.0`` when admitted, ``None`` when never."""
        ra = self.retry_after_ns
        return None if ra is None else ra / NS_PER_S

    @property
    def retry_after_ms(self) -> int | None:
        """Milliseconds to wait for the wire, rounded *up* so it stays sound (never round down, redis-cell #56)."""
        ra = self.retry_after_ns
        return None if ra is None else -(-ra // 1_000_000)

    @property
    def delay_s(self) -> float:
        return self.delay_ns / NS_PER_S


# Building a NamedTuple through its Python-level __new__ costs more than the whole GCRA arithmetic, so the hot paths
# build decisions with tuple.__new__ and reuse the (immutable) admitted answers for small ``remaining`` values.
_new = tuple.__new__
_CACHED_ADMITS = 1024
_ADMITS = tuple(_new(Decision, (True, 0, r, 0, ADMITTED, None, None, None, "")) for r in range(_CACHED_ADMITS))


def admitted(remaining: int, delay_ns: int = 0) -> Decision:
    """An admitting decision (shared instances for small ``remaining`` and no delay)."""
    if delay_ns == 0 and remaining < _CACHED_ADMITS:
        return _ADMITS[remaining]
    return _new(Decision, (True, 0, remaining, delay_ns, ADMITTED, None, None, None, ""))


def refused(retry_after_ns: int, remaining: int, reason: str = RATE) -> Decision:
    """A refusal for the rate (or a full queue): the same request fits after ``retry_after_ns`` (> 0)."""
    return _new(Decision, (False, retry_after_ns, remaining, 0, reason, None, None, None, ""))


def never(max_cost: int) -> Decision:
    """The cost can never fit: an immediate, distinct answer, never a wait forever (aiolimiter raises ValueError,
    redis-cell answers retry_after -1; we answer a decision naming the largest cost that fits)."""
    return Decision(False, None, 0, 0, COST_EXCEEDS_CAPACITY, max_cost)


@runtime_checkable
class Algorithm(Protocol):
    """What the policy layer needs from a limiter; third-party plug-ins implement this (or subclass KeyedAlgorithm).

    Construction: ``Cls(*, mode="reject", max_keys=DEFAULT_MAX_KEYS, **params)``; a bad or unknown parameter raises
    ``ValueError`` or ``TypeError``. ``modes`` lists the modes it supports (``"reject"``, and ``"shape"`` for a
    limiter that can delay instead of refusing). ``capacity`` is the largest single cost it can ever admit
    (``None``: any). Rules (each checked by the contract suite in tests/core/limits):

    * ``acquire(key, cost, now_ns)`` decides and, if admitted, charges. A refusal changes nothing.
    * ``peek(key, cost, now_ns)`` answers what ``acquire`` would answer at that instant, charging nothing; an
      ``acquire`` right after an admitting ``peek`` with the same arguments admits.
    * ``cost > capacity`` answers ``COST_EXCEEDS_CAPACITY`` at once with ``max_cost = capacity``.
    * ``now_ns`` lower than one seen before is treated as the highest seen (clamped, never credit).
    * ``retry_after_ns`` is sound and minimal (see Decision).
    * ``sweep(now_ns, max_checks=None)`` drops keys whose state equals a fresh key's (examining at most
      ``max_checks`` keys, least recently used first), returns how many; it never changes a decision.
    * ``len(limiter)`` is the number of tracked keys, never above ``max_keys``.
    """

    modes: ClassVar[tuple[str, ...]]
    capacity: int | None

    def acquire(self, key: Hashable, cost: int, now_ns: int) -> Decision: ...

    def peek(self, key: Hashable, cost: int, now_ns: int) -> Decision: ...

    def sweep(self, now_ns: int, max_checks: int | None = None) -> int: ...

    def forget(self, key: Hashable) -> None: ...

    def __len__(self) -> int: ...


class KeyedAlgorithm:
    """Helper base for limiters: keeps one state value per key in an LRU-ordered dict with a hard cap.

    A subclass implements two pure hooks:

    * ``decide(state, cost, now_ns, charge) -> (Decision, new_state)``: ``state`` is ``None`` for a key never seen
      (or forgotten). With ``charge`` false, or when refusing, it must not change ``state`` in any way that alters
      a later decision (returning a new value is simplest). ``now_ns`` is already clamped, and ``cost`` already
      checked against ``capacity``.
    * ``is_fresh(state, now_ns) -> bool``: the state is indistinguishable from a never-seen key's from now on.

    Memory (DESIGN.md section 3, bounded): a key whose state is fresh can be dropped without changing any decision.
    When a new key arrives at ``max_keys``, the least recently used keys are examined and the fresh ones dropped
    (as nginx ``limit_req`` frees drained nodes when it must allocate one); if none is fresh, the least recently
    used key is evicted although live, which *forgives* it (it starts again as a fresh key; counted in
    ``evicted_live``). ``sweep`` drops fresh keys below the cap; the server may call it from its one timer, with
    ``max_checks`` to bound each call. No timer or task per key. (Fresh keys are not dropped on every new key:
    a client that stays under its rate is fresh between requests, and re-tracking it each time doubles the cost.)
    """

    name: ClassVar[str] = "keyed"
    modes: ClassVar[tuple[str, ...]] = ("reject",)
    capacity: int | None = None

    def __init__(self, *, mode: str = "reject", max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if mode not in self.modes:
            raise ValueError(f"{self.name} supports mode {' or '.join(map(repr, self.modes))}, not {mode!r}")
        self.mode = mode
        self.max_keys = positive_int(max_keys, "max_keys")
        self._states: dict[Hashable, Any] = {}
        self._high_water_ns = _NEVER_SEEN_NS
        self.evicted_live = 0  # live keys evicted at the cap (forgiven)

    # -- hooks -------------------------------------------------------------------------------------------------
    def decide(self, state: Any, cost: int, now_ns: int, charge: bool) -> tuple[Decision, Any]:
        raise NotImplementedError

    def is_fresh(self, state: Any, now_ns: int) -> bool:
        raise NotImplementedError

    # -- the Algorithm protocol --------------------------------------------------------------------------------
    def acquire(self, key: Hashable, cost: int, now_ns: int) -> Decision:
        if now_ns < self._high_water_ns:
            now_ns = self._high_water_ns
        else:
            self._high_water_ns = now_ns
        capacity = self.capacity
        if capacity is not None and cost > capacity:
            return never(capacity)
        states = self._states
        state = states.pop(key, None)  # re-inserted below, at the most recently used end
        try:
            decision, new_state = self.decide(state, cost, now_ns, True)
        except BaseException:
            if state is not None:
                states[key] = state
            raise
        if state is None:
            if decision[0]:
                self._track(key, new_state, now_ns)
        else:
            states[key] = new_state if decision[0] else state
        return decision

    def peek(self, key: Hashable, cost: int, now_ns: int) -> Decision:
        if now_ns < self._high_water_ns:
            now_ns = self._high_water_ns
        capacity = self.capacity
        if capacity is not None and cost > capacity:
            return never(capacity)
        return self.decide(self._states.get(key), cost, now_ns, False)[0]

    def sweep(self, now_ns: int, max_checks: int | None = None) -> int:
        """Drop keys whose state is fresh at ``now_ns`` (clamped), examining at most ``max_checks`` keys from the
        least recently used end (all when ``None``); returns how many were dropped."""
        now_ns = max(now_ns, self._high_water_ns)
        states = self._states
        is_fresh = self.is_fresh
        stale = []
        for checked, (k, s) in enumerate(states.items()):
            if max_checks is not None and checked >= max_checks:
                break
            if is_fresh(s, now_ns):
                stale.append(k)
        for k in stale:
            del states[k]
        return len(stale)

    def forget(self, key: Hashable) -> None:
        self._states.pop(key, None)

    def __len__(self) -> int:
        return len(self._states)

    def state_of(self, key: Hashable) -> Any:
        """The stored state of ``key`` (``None`` if untracked); for tests and the admin API."""
        return self._states.get(key)

    # -- key store ---------------------------------------------------------------------------------------------
    def _track(self, key: Hashable, state: Any, now_ns: int) -> None:
        """Store the state of a key not tracked yet, making room first if the cap is reached."""
        states = self._states
        if len(states) >= self.max_keys:
            if not self.sweep(now_ns, _PROBES_AT_CAP):
                del states[next(iter(states))]
                self.evicted_live += 1
        states[key] = state


# -- parameter helpers (shared by the algorithms and plug-ins) ---------------------------------------------------
def positive_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def non_negative_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def positive_fraction(value: Any, name: str) -> Fraction:
    """An exact positive rational from an int, a float (read as its shortest decimal: 0.1 is 1/10), a string
    ("1000", "0.5", "3/2") or a Fraction. Exact so that integer arithmetic stays exact (limits.md section 0.1)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    try:
        if isinstance(value, float):
            result = Fraction(repr(value))
        elif isinstance(value, (int, str, Fraction)):
            result = Fraction(value)
        else:
            raise TypeError
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if result <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return result


def seconds_to_ns(value: Any, name: str) -> int:
    """A positive duration in seconds as whole nanoseconds (rounded to the nearest ns, at least 1)."""
    return max(1, round(positive_fraction(value, name) * NS_PER_S))
