# Limit policies: which requests a limiter applies to (scope + name pattern), what it counts (unit), and the set
# of policies the server asks once per request: all matching policies must admit, then all are charged. Owns the
# per-policy and per-key throttle counts, and turns a plug-in's exception into an error decision. Pure: time is
# passed in. Must not know about the wire format, the server's waiting, persistence or the CLI; it only gives
# and takes plain dicts.
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from fnmatch import translate
from typing import Any, Callable, Hashable, Iterable, Mapping

from millpond.broker.core.limits.base import (
    COST_EXCEEDS_CAPACITY,
    DEFAULT_MAX_KEYS,
    ERROR,
    Decision,
    admitted,
    positive_int,
)
from millpond.broker.core.limits.registry import DEFAULT_ALGORITHM, Algorithms, UnknownAlgorithm
from millpond.broker.wire.errors import InvalidConfigError

logger = logging.getLogger(__name__)

SCOPES = ("client", "topic", "queue", "global")
UNITS = ("requests", "records", "bytes")
MODES = ("reject", "shape")
# what a policy counts: writes (produce, queue send and send-batch) or receives (queue receive, push delivery)
WRITE, RECEIVE = "write", "receive"
OPERATIONS = (WRITE, RECEIVE)
RECEIVE_UNITS = ("requests", "records")
STATS_KEYS_MAX = 1000  # per policy: keys whose throttle counts are kept (least recently throttled dropped first)
MATCH_CACHE_MAX = 10_000  # (client, topic, queue) triples whose matching policies are remembered
UNLIMITED = Decision(True, 0, (1 << 63) - 1)  # the answer when no policy applies
_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_POLICY_KEYS = ("name", "scope", "pattern", "unit", "algorithm", "mode", "params", "max_keys", "operation")


@dataclass(frozen=True, slots=True)
class Policy:
    """One limit policy.

    ``scope``: whose traffic is counted: ``client`` (by client id), ``topic``, ``queue`` (by name), or ``global``
    (everything, one shared state). ``pattern``: an fnmatch pattern (``*``, ``?``, ``[seq]``, case-sensitive) on
    the client id / topic / queue name; every matching name gets its own state (as nginx keys a zone by
    ``$binary_remote_addr``); ignored for ``global``. ``unit``: a request costs 1 (``requests``), its record count
    (``records``) or its size in bytes (``bytes``). ``algorithm``: a built-in name or a plug-in the operator
    registered (see ``registry.Algorithms``); ``params``: that algorithm's parameters, e.g. ``{"rate": 1000, "burst":
    100}``. ``mode``: ``reject`` answers THROTTLED with retry-after; ``shape`` delays the request instead (the
    leaky bucket's queue form). ``max_keys``: names tracked before LRU eviction (an evicted name is forgiven).
    ``operation``: what the policy counts: ``write`` (the default: produces, queue sends and send-batches) or
    ``receive`` (queue receives and push deliveries, per client or per queue: ``requests`` counts each answered
    receive or push, ``records`` the messages it hands out; ``reject`` mode only: a receive is never held back,
    it is answered THROTTLED, and a push waits). Scopes ``client`` and ``queue`` (and ``global``) apply to
    receives; a ``topic`` policy never matches one.
    """

    name: str
    scope: str = "client"
    pattern: str = "*"
    unit: str = "records"
    algorithm: str = DEFAULT_ALGORITHM
    params: Mapping[str, Any] = field(default_factory=dict)
    mode: str = "reject"
    max_keys: int = DEFAULT_MAX_KEYS
    operation: str = WRITE

    def __post_init__(self) -> None:
        name_ok = isinstance(self.name, str) and _NAME.fullmatch(self.name) and self.name not in (".", "..")
        if not name_ok:
            raise InvalidConfigError(f"policy names are 1-249 characters of [A-Za-z0-9._-], got {_short(self.name)}")
        where = f"limit policy {self.name!r}"
        if self.scope not in SCOPES:
            raise InvalidConfigError(f"{where}: scope must be one of {', '.join(SCOPES)}, got {_short(self.scope)}")
        if not isinstance(self.pattern, str) or not self.pattern:
            raise InvalidConfigError(f"{where}: pattern must be a non-empty string, got {_short(self.pattern)}")
        if self.unit not in UNITS:
            raise InvalidConfigError(f"{where}: unit must be one of {', '.join(UNITS)}, got {_short(self.unit)}")
        if self.mode not in MODES:
            raise InvalidConfigError(f"{where}: mode must be one of {', '.join(MODES)}, got {_short(self.mode)}")
        if self.operation not in OPERATIONS:
            raise InvalidConfigError(f"{where}: operation must be one of {', '.join(OPERATIONS)}, got "
                                     f"{_short(self.operation)}")
        if self.operation == RECEIVE:
            if self.unit not in RECEIVE_UNITS:
                raise InvalidConfigError(f"{where}: a receive policy counts {' or '.join(RECEIVE_UNITS)} (messages), "
                                         f"not {self.unit}")
            if self.mode != "reject":
                raise InvalidConfigError(f"{where}: a receive policy's mode is reject (a receive is answered "
                                         f"THROTTLED, never held), got {_short(self.mode)}")
            if self.scope == "topic":
                raise InvalidConfigError(f"{where}: a receive policy's scope is client, queue or global (receives "
                                         "read queues, not topics)")
        if not isinstance(self.params, Mapping) or not all(isinstance(k, str) for k in self.params):
            raise InvalidConfigError(f"{where}: params must be a table of named values, got {_short(self.params)}")
        try:
            positive_int(self.max_keys, "max_keys")
        except ValueError as exc:
            raise InvalidConfigError(f"{where}: {exc}") from None
        object.__setattr__(self, "params", dict(self.params))

    def build(self, algorithms: Algorithms | None = None) -> Any:
        """A fresh limiter for this policy, its class found in ``algorithms`` (default: built-ins, ``register``ed
        names and entry points only). InvalidConfigError names an unknown algorithm or a bad parameter."""
        try:
            cls = (algorithms or Algorithms()).resolve(self.algorithm)
        except UnknownAlgorithm as exc:
            raise InvalidConfigError(f"limit policy {self.name!r}: {exc}") from None
        try:
            return cls(mode=self.mode, max_keys=self.max_keys, **self.params)
        except TypeError as exc:
            problem = _parameter_problem(cls, exc)
            raise InvalidConfigError(f"limit policy {self.name!r}: {self.algorithm}: {problem}"[:500]) from None
        except (ValueError, ArithmeticError) as exc:
            raise InvalidConfigError(f"limit policy {self.name!r}: {self.algorithm}: {exc}"[:500]) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the config file, the admin API and persistence; ``from_dict`` reads it back."""
        return {"name": self.name, "scope": self.scope, "pattern": self.pattern, "unit": self.unit,
                "algorithm": self.algorithm, "mode": self.mode, "params": dict(self.params),
                "max_keys": self.max_keys, "operation": self.operation}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Policy":
        """Read a policy from plain data. Unknown keys are an error, never ignored. ``scope`` may carry the pattern
        as ``"client:orders-*"`` (the CLI's ``--scope`` form)."""
        if not isinstance(data, Mapping):
            raise InvalidConfigError(f"a limit policy must be a table, got {data!r}"[:300])
        unknown = sorted(map(repr, set(data) - set(_POLICY_KEYS)))  # repr: keys need not be strings, nor sortable
        if unknown:
            raise InvalidConfigError(f"unknown limit policy key(s) {', '.join(unknown)}; known keys: "
                                     f"{', '.join(_POLICY_KEYS)}"[:500])
        if "name" not in data:
            raise InvalidConfigError("a limit policy needs a name")
        values = dict(data)
        scope = values.get("scope")
        if isinstance(scope, str) and ":" in scope:
            if "pattern" in values:
                raise InvalidConfigError(f"limit policy {values['name']!r}: the pattern is given twice")
            values["scope"], values["pattern"] = scope.split(":", 1)
        return cls(**values)


class _Active:
    """One policy at run time: its limiter and its counters."""

    __slots__ = ("policy", "name", "unit", "unit_index", "operation", "algorithm", "match", "admitted", "throttled",
                 "delayed", "never_fits", "errors", "last_error", "throttled_by_key")

    def __init__(self, policy: Policy, algorithm: Any) -> None:
        self.policy = policy
        self.name = policy.name
        self.unit = policy.unit
        self.unit_index = UNITS.index(policy.unit)
        self.operation = policy.operation
        self.algorithm = algorithm
        self.match: Callable[[str], Any] | None = None  # None: matches every name
        if policy.pattern != "*":
            self.match = re.compile(translate(policy.pattern)).match
        self.admitted = self.throttled = self.delayed = self.never_fits = self.errors = 0
        self.last_error = ""
        self.throttled_by_key: dict[Hashable, int] = {}

    def count_refusal(self, decision: Decision, key: Hashable) -> None:
        if decision.reason == COST_EXCEEDS_CAPACITY:
            self.never_fits += 1
            return
        self.throttled += 1
        counts = self.throttled_by_key
        n = counts.pop(key, 0) + 1
        if n == 1 and len(counts) >= STATS_KEYS_MAX:
            del counts[next(iter(counts))]
        counts[key] = n

    def failed(self, exc: BaseException) -> Decision:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.errors == 1:
            logger.error("limit policy %r (%s) raised; its requests get an error", self.name,
                         self.policy.algorithm, exc_info=exc)
        return Decision(False, None, 0, 0, ERROR, None, self.name, self.unit,
                        f"limit policy {self.name!r} failed: {self.last_error}")


@dataclass(frozen=True, slots=True)
class PolicyStatistics:
    name: str
    admitted: int  # requests this policy admitted (and was charged for)
    throttled: int  # requests it refused for the rate or a full queue
    delayed: int  # requests it admitted with a shaping delay
    never_fits: int  # requests whose cost exceeds its capacity
    errors: int  # checks where its algorithm raised
    keys_tracked: int
    keys_evicted: int  # live keys evicted at max_keys (forgiven)
    throttled_by_key: dict[Hashable, int]  # the STATS_KEYS_MAX most recently throttled keys
    last_error: str


class PolicySet:
    """All limit policies of a broker; the server calls ``admit`` once per request.

    ``admit`` is all-or-nothing (as nginx ``limit_req`` unlocks earlier zones without charging when a later one
    refuses): every matching policy is asked first without charging; if all admit, all are charged; if any
    refuses, none is, and the answer is the refusal with the largest ``retry_after_ns`` (a cost that can never fit
    wins over a rate refusal: waiting would not help). An admitted answer carries the largest shaping delay and
    the smallest ``remaining``. A limiter that raises makes an ``ERROR`` decision naming the policy; the exception
    never escapes. Policies can be set, replaced and deleted at any time; replacing one starts it afresh.
    """

    def __init__(self, policies: Iterable[Policy | Mapping[str, Any]] = (), algorithms: Algorithms | None = None) -> None:
        self.algorithms = algorithms or Algorithms()
        self._active: dict[str, _Active] = {}
        self._cache: dict[tuple[str, str | None, str | None, str], tuple[tuple[_Active, Hashable], ...]] = {}
        self._high_water_ns = -(1 << 62)
        for p in policies:
            self.set(p)

    # -- configuration -----------------------------------------------------------------------------------------
    def set(self, policy: Policy | Mapping[str, Any]) -> Policy:
        """Add a policy, or replace the one with its name (its state and counters start afresh)."""
        if not isinstance(policy, Policy):
            policy = Policy.from_dict(policy)
        active = _Active(policy, policy.build(self.algorithms))
        self._active[policy.name] = active
        self._cache.clear()
        return policy

    def delete(self, name: str) -> Policy:
        """Remove a policy; KeyError if there is none by that name."""
        active = self._active.pop(name)
        self._cache.clear()
        return active.policy

    def get(self, name: str) -> Policy:
        return self._active[name].policy

    def __contains__(self, name: object) -> bool:
        return name in self._active

    def __len__(self) -> int:
        return len(self._active)

    def policies(self) -> list[Policy]:
        return [a.policy for a in self._active.values()]

    def to_dicts(self) -> list[dict[str, Any]]:
        return [a.policy.to_dict() for a in self._active.values()]

    @classmethod
    def from_dicts(cls, items: Iterable[Mapping[str, Any]]) -> "PolicySet":
        return cls(items)

    # -- the request path --------------------------------------------------------------------------------------
    def admit(self, now_ns: int, *, client_id: str = "", topic: str | None = None, queue: str | None = None,
              records: int = 1, nbytes: int = 0) -> Decision:
        """Check and charge one request against every matching policy, all-or-nothing.

        ``now_ns``: the server's monotonic clock in integer nanoseconds (e.g. ``int(trio.current_time() * 1e9)``);
        a value below one seen before is clamped. ``records`` and ``nbytes`` are the request's cost in the
        ``records`` and ``bytes`` units (a request costs 1 in ``requests``).

        The server acts on the answer: ``allowed`` with ``delay_ns`` 0: go on; ``allowed`` with ``delay_ns`` > 0:
        wait that long, then go on (already charged); ``reason`` ``rate`` or ``queue_full``: answer THROTTLED
        with ``retry_after_ms``; ``cost_exceeds_capacity``: refuse, naming ``max_cost`` and ``unit``;
        ``error``: answer an error carrying ``message``.
        """
        if records < 0 or nbytes < 0:
            raise ValueError(f"a request's cost cannot be negative (records={records}, nbytes={nbytes})")
        if now_ns < self._high_water_ns:
            now_ns = self._high_water_ns
        else:
            self._high_water_ns = now_ns
        matches = self._cache.get((client_id, topic, queue, WRITE))
        if matches is None:
            matches = self._matching(client_id, topic, queue, WRITE)
        if not matches:
            return UNLIMITED
        if len(matches) == 1:  # one policy: acquire directly, a refusal charges nothing anyway
            active, key = matches[0]
            cost = 1 if active.unit_index == 0 else (records if active.unit_index == 1 else nbytes)
            try:
                decision = active.algorithm.acquire(key, cost, now_ns)
            except Exception as exc:
                return active.failed(exc)
            if decision[0]:  # allowed (indexing: the hot path)
                active.admitted += 1
                if decision[3]:  # delay_ns
                    active.delayed += 1
                return decision
            active.count_refusal(decision, key)
            return decision._replace(policy=active.name, unit=active.unit)
        return self._admit_all(matches, now_ns, (1, records, nbytes))

    def _admit_all(self, matches: tuple[tuple[_Active, Hashable], ...], now_ns: int,
                   costs: tuple[int, int, int]) -> Decision:
        worst: Decision | None = None
        for active, key in matches:
            try:
                decision = active.algorithm.peek(key, costs[active.unit_index], now_ns)
            except Exception as exc:
                return active.failed(exc)
            if not decision.allowed:
                active.count_refusal(decision, key)
                decision = decision._replace(policy=active.name, unit=active.unit)
                if worst is None or _worse(decision, worst):
                    worst = decision
        if worst is not None:
            return worst
        remaining = UNLIMITED.remaining
        delay_ns = 0
        for active, key in matches:
            try:
                decision = active.algorithm.acquire(key, costs[active.unit_index], now_ns)
            except Exception as exc:
                return active.failed(exc)
            if not decision.allowed:  # a limiter that breaks "acquire after an admitting peek admits"
                return active.failed(RuntimeError(f"refused ({decision.reason}) right after admitting a peek"))
            active.admitted += 1
            if decision.delay_ns:
                active.delayed += 1
                delay_ns = max(delay_ns, decision.delay_ns)
            remaining = min(remaining, decision.remaining)
        return admitted(remaining, delay_ns)

    def _matching(self, client_id: str, topic: str | None, queue: str | None,
                  operation: str) -> tuple[tuple[_Active, Hashable], ...]:
        names = {"client": client_id, "topic": topic, "queue": queue}
        found = []
        for active in self._active.values():
            if active.operation != operation:
                continue
            scope = active.policy.scope
            if scope == "global":
                found.append((active, ""))
                continue
            name = names[scope]
            if name is not None and (active.match is None or active.match(name)):
                found.append((active, name))
        result = tuple(found)
        if len(self._cache) >= MATCH_CACHE_MAX:
            self._cache.clear()
        self._cache[(client_id, topic, queue, operation)] = result
        return result

    def receivable(self, now_ns: int, *, client_id: str = "", queue: str, wanted: int) -> tuple[int, Decision]:
        """How many messages (0 to ``wanted``) a receive may hand out now under the ``receive`` policies matching
        the client and the queue, charging nothing: ``(wanted, UNLIMITED)`` when none applies; ``(0, refusal)``
        when one cannot admit a request of one message now (the refusal as ``admit``'s, ``retry_after_ns`` the
        longest); else at most what each ``records`` policy could admit at once (its ``remaining`` after one, plus
        that one). The caller receives that many at most, then ``charge_receive``s what it handed out."""
        matches = self._receive_matches(client_id, queue)
        if not matches:
            return wanted, UNLIMITED
        now_ns = self._clock(now_ns)
        worst: Decision | None = None
        allowed = wanted
        for active, key in matches:
            try:
                decision = active.algorithm.peek(key, 1, now_ns)
            except Exception as exc:
                return 0, active.failed(exc)
            if not decision.allowed:
                active.count_refusal(decision, key)
                decision = decision._replace(policy=active.name, unit=active.unit)
                if worst is None or _worse(decision, worst):
                    worst = decision
            elif active.unit_index == 1:
                allowed = min(allowed, decision.remaining + 1)
        if worst is not None:
            return 0, worst
        return allowed, UNLIMITED

    def charge_receive(self, now_ns: int, *, client_id: str = "", queue: str, records: int) -> None:
        """Charge an answered receive to the ``receive`` policies matching the client and the queue: one request,
        ``records`` messages (at most what ``receivable`` allowed just before, so each is admitted; a limiter that
        refuses it anyway, or raises, is counted as an error of its policy)."""
        now_ns = self._clock(now_ns)
        for active, key in self._receive_matches(client_id, queue):
            cost = 1 if active.unit_index == 0 else records
            if cost <= 0:
                continue
            try:
                decision = active.algorithm.acquire(key, cost, now_ns)
            except Exception as exc:
                active.failed(exc)
                continue
            if decision[0]:
                active.admitted += 1
            else:
                active.failed(RuntimeError(f"refused ({decision.reason}) a receive its peek admitted"))

    def _clock(self, now_ns: int) -> int:
        """``now_ns``, or the largest time seen before when it is below it (a clock never runs back)."""
        if now_ns < self._high_water_ns:
            return self._high_water_ns
        self._high_water_ns = now_ns
        return now_ns

    def _receive_matches(self, client_id: str, queue: str) -> tuple[tuple[_Active, Hashable], ...]:
        matches = self._cache.get((client_id, None, queue, RECEIVE))
        return self._matching(client_id, None, queue, RECEIVE) if matches is None else matches

    def max_costs(self, *, client_id: str = "", topic: str | None = None,
                  queue: str | None = None) -> dict[str, int]:
        """The largest cost per unit that fits every policy matching these names (units without a bound are left
        out): what a producer must split its batches to, e.g. ``{"records": 100, "bytes": 65536}``."""
        result: dict[str, int] = {}
        for active, _ in self._matching(client_id, topic, queue, WRITE):
            capacity = getattr(active.algorithm, "capacity", None)
            if active.unit != "requests" and isinstance(capacity, int):
                result[active.unit] = min(capacity, result.get(active.unit, capacity))
        return result

    # -- upkeep and stats --------------------------------------------------------------------------------------
    def sweep(self, now_ns: int, max_checks: int | None = None) -> int:
        """Drop keys whose limiter state is fresh, in every policy, examining at most ``max_checks`` keys per
        policy (least recently used first; all when ``None``); returns how many. Optional (at the key cap fresh
        keys are dropped anyway): the server's timer may call it, e.g. every few seconds with ``max_checks=1000``,
        to give memory back. A limiter that raises here is counted as an error and skipped."""
        dropped = 0
        for active in self._active.values():
            try:
                dropped += active.algorithm.sweep(now_ns, max_checks)
            except Exception as exc:
                active.failed(exc)
        return dropped

    def statistics(self) -> dict[str, PolicyStatistics]:
        out = {}
        for name, a in self._active.items():
            try:
                tracked = len(a.algorithm)
            except Exception:
                tracked = -1
            out[name] = PolicyStatistics(name, a.admitted, a.throttled, a.delayed, a.never_fits, a.errors, tracked,
                                         getattr(a.algorithm, "evicted_live", 0), dict(a.throttled_by_key),
                                         a.last_error)
        return out


def _short(value: Any) -> str:
    """A value for an error message, cut short: a client's bad input is named, not echoed at any length."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _parameter_problem(cls: type, exc: TypeError) -> str:
    """'unknown parameter 'brust'; this algorithm takes rate, burst, ...' rather than Python's own wording."""
    import inspect

    try:
        names = [n for n, p in inspect.signature(cls).parameters.items()
                 if n not in ("mode", "max_keys") and p.kind is p.KEYWORD_ONLY]
    except (TypeError, ValueError):
        return str(exc)
    text = str(exc)
    bad = text.rsplit("'", 2)[1] if text.count("'") >= 2 and "unexpected keyword" in text else None
    if bad is not None:
        return f"unknown parameter {bad!r}; this algorithm takes {', '.join(names)}"
    if "missing" in text:
        return f"{text.split('() ', 1)[-1]}; this algorithm takes {', '.join(names)}"
    return text


def _worse(a: Decision, b: Decision) -> bool:
    """Which refusal to report: a cost that never fits, then the longest retry-after."""
    if b.reason == COST_EXCEEDS_CAPACITY:
        return False
    if a.reason == COST_EXCEEDS_CAPACITY:
        return True
    return (a.retry_after_ns or 0) > (b.retry_after_ns or 0)
