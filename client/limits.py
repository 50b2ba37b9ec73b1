# Limit policies as the client sees them: the typed records that `Client.list_limits` / `set_limit` return and the
# `limits_set` body they send (docs/protocol.md "Limits"). Plain data; must not know sockets, the broker's
# algorithms or its validation (the broker validates and answers INVALID_CONFIG).
"""Limit policies (issue 4).

A policy says whose traffic it counts (``scope``: ``client``, ``topic``, ``queue`` or ``global``, with an fnmatch
pattern after a colon: ``"client:app-*"``), in which ``unit`` (``requests``, ``records``, ``bytes``), with which
``algorithm`` (``leaky_bucket`` default, ``token_bucket``, ``fixed_window``, ``sliding_log``, ``sliding_window``,
or a plug-in the broker's operator registered, by its name) and its parameters (``rate`` in units/s and ``burst`` in units for the
buckets; ``limit`` in units and ``window_s`` in seconds for the windows; ``queue`` in units for shaping), and
what happens over the limit (``mode``: ``reject`` answers THROTTLED with a retry-after that the producer waits
out; ``shape`` delays the answer instead)::

    await c.set_limit("slow", scope="client:app-*", unit="records", rate=1000, burst=100)
    for p in await c.list_limits():
        print(p.name, p.stats.throttled, p.stats.throttled_by_key)
    await c.delete_limit("slow")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["LimitPolicy", "LimitStatistics", "parse_policy", "policy_body"]


@dataclass(frozen=True, slots=True)
class LimitStatistics:
    """Counters of one policy since it was set (replacing a policy starts them afresh)."""

    admitted: int  # requests it admitted (and was charged for)
    throttled: int  # requests it refused for the rate or a full shaping queue (THROTTLED)
    delayed: int  # requests it admitted with a shaping delay
    never_fits: int  # requests costing more than it can ever admit (COST_EXCEEDS_LIMIT)
    errors: int  # checks where its algorithm raised (LIMIT_POLICY_FAILED)
    keys_tracked: int  # keys (client ids, topic names...) with state now
    keys_evicted: int  # live keys evicted at max_keys (forgiven)
    throttled_by_key: dict[str, int] = field(default_factory=dict)  # the most recently throttled keys
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """One policy as the broker applied it. ``scope`` and ``pattern`` are separate here (``"client"``, ``"app-*"``);
    ``stats`` is set by ``list_limits`` only."""

    name: str
    scope: str
    pattern: str
    unit: str
    algorithm: str
    mode: str
    params: dict[str, Any]
    max_keys: int
    stats: LimitStatistics | None = None
    operation: str = "write"


def policy_body(name: str, *, scope: str, unit: str, algorithm: str, mode: str, max_keys: int | None,
                params: Mapping[str, Any], operation: str = "write") -> dict[str, Any]:
    """The ``policy`` map of a ``limits_set`` request. ``max_keys=None``: the broker's default."""
    policy: dict[str, Any] = {"name": name, "scope": scope, "unit": unit, "algorithm": algorithm, "mode": mode,
                              "params": dict(params), "operation": operation}
    if max_keys is not None:
        policy["max_keys"] = int(max_keys)
    return policy


def parse_policy(data: Mapping[str, Any]) -> LimitPolicy:
    """A ``LimitPolicy`` from a ``limits_set`` / ``limits_list`` answer."""
    stats = data.get("stats")
    parsed = None
    if stats is not None:
        parsed = LimitStatistics(
            admitted=int(stats.get("admitted", 0)), throttled=int(stats.get("throttled", 0)),
            delayed=int(stats.get("delayed", 0)), never_fits=int(stats.get("never_fits", 0)),
            errors=int(stats.get("errors", 0)), keys_tracked=int(stats.get("keys_tracked", 0)),
            keys_evicted=int(stats.get("keys_evicted", 0)),
            throttled_by_key={str(k): int(v) for k, v in (stats.get("throttled_by_key") or {}).items()},
            last_error=str(stats.get("last_error") or ""))
    return LimitPolicy(name=str(data["name"]), scope=str(data["scope"]), pattern=str(data.get("pattern", "*")),
                       unit=str(data["unit"]), algorithm=str(data["algorithm"]), mode=str(data["mode"]),
                       params=dict(data.get("params") or {}), max_keys=int(data.get("max_keys", 0)), stats=parsed,
                       operation=str(data.get("operation", "write")))
