# The policy layer the server calls: policies to and from plain dicts (unknown keys refused), scope and pattern
# matching, units, all-or-nothing over several policies, shaping delays, never-fitting costs, the operator's plug-ins
# by name and by entry point, a raising plug-in contained as an error decision, and the throttle counts.
from __future__ import annotations

from importlib import metadata

import pytest

from millpond.broker.core.limits import (
    ALGORITHMS,
    COST_EXCEEDS_CAPACITY,
    ERROR,
    QUEUE_FULL,
    RATE,
    KeyedAlgorithm,
    Policy,
    PolicySet,
    UnknownAlgorithm,
    register,
    resolve,
)
from millpond.broker.core.limits import policy as policy_module
from millpond.broker.core.limits import registry
from millpond.broker.core.limits.registry import Algorithms
from millpond.broker.wire.errors import InvalidConfigError
from examples.limits_plugin import CappedLeakyBucket
from limitkit import MS, S

PLUGIN = "examples.limits_plugin:CappedLeakyBucket"


def records_policy(name="p", **kw):
    base = {"name": name, "scope": "client", "unit": "records", "params": {"rate": 1000, "burst": 100}}
    base.update(kw)
    return base


# -- plain data ------------------------------------------------------------------------------------------------
def test_policy_round_trips_through_plain_dicts():
    p = Policy.from_dict({"name": "orders", "scope": "topic:orders-*", "unit": "bytes", "algorithm": "token_bucket",
                          "params": {"rate": 1_000_000, "burst": 65536, "debt": True}, "mode": "reject"})
    assert (p.scope, p.pattern) == ("topic", "orders-*")
    assert Policy.from_dict(p.to_dict()) == p
    ps = PolicySet([p, records_policy()])
    assert PolicySet.from_dicts(ps.to_dicts()).to_dicts() == ps.to_dicts()
    assert [q.name for q in ps.policies()] == ["orders", "p"]


@pytest.mark.parametrize("bad, words", [
    ({"name": "p", "rate": 5}, "unknown limit policy key"),
    ({"scope": "client"}, "needs a name"),
    ({"name": "a/b"}, "policy names"),
    ({"name": "p", "scope": "user"}, "scope must be"),
    ({"name": "p", "unit": "messages"}, "unit must be"),
    ({"name": "p", "mode": "drop"}, "mode must be"),
    ({"name": "p", "scope": "client:x", "pattern": "y"}, "twice"),
    ({"name": "p", "algorithm": "nope", "params": {"rate": 1}}, "unknown limit algorithm"),
    ({"name": "p", "algorithm": "no.such.module:X", "params": {"rate": 1}}, "registered by the broker.s operator"),
    ({"name": "p", "params": {"rate": 1, "brust": 3}}, "brust"),
    ({"name": "p", "params": {"rate": -1}}, "rate must be"),
    ({"name": "p", "params": {"limit": 1, "window_s": 1}, "mode": "shape", "algorithm": "fixed_window"}, "mode"),
    ({"name": "p", "params": {"rate": 1}, "max_keys": 0}, "max_keys"),
])
def test_bad_policies_are_refused_with_a_clear_message(bad, words):
    with pytest.raises(InvalidConfigError, match=words):
        PolicySet([bad])


def test_a_bad_replacement_leaves_the_old_policy_in_place():
    ps = PolicySet([records_policy()])
    with pytest.raises(InvalidConfigError):
        ps.set(records_policy(params={"rate": 0}))
    assert ps.get("p").params == {"rate": 1000, "burst": 100}


# -- matching and units ----------------------------------------------------------------------------------------
def test_scopes_patterns_and_per_name_state():
    ps = PolicySet([
        {"name": "analytics", "scope": "client:analytics-*", "unit": "requests", "params": {"rate": 1, "burst": 1}},
        {"name": "orders", "scope": "topic:orders", "unit": "records", "params": {"rate": 1, "burst": 5}},
        {"name": "work", "scope": "queue:jobs-?", "unit": "requests", "params": {"rate": 1, "burst": 1}},
    ])
    assert ps.admit(0, client_id="analytics-1").allowed
    assert not ps.admit(0, client_id="analytics-1").allowed
    assert ps.admit(0, client_id="analytics-2").allowed  # its own state
    assert ps.admit(0, client_id="web").allowed and ps.admit(0, client_id="web").allowed  # not matched
    assert ps.admit(0, client_id="web", topic="orders", records=5).allowed
    assert not ps.admit(0, client_id="other", topic="orders", records=1).allowed  # per topic, whoever sends
    assert ps.admit(0, topic="orders-eu", records=50).allowed  # exact pattern: no match
    assert ps.admit(0, queue="jobs-1").allowed and not ps.admit(0, queue="jobs-1").allowed
    assert ps.admit(0, queue="jobs-10").allowed and ps.admit(0, queue="jobs-10").allowed
    assert ps.admit(0, client_id="Analytics-1").allowed  # case-sensitive


def test_global_scope_is_one_state_for_everyone_and_units_count_what_they_say():
    ps = PolicySet([{"name": "bytes", "scope": "global", "unit": "bytes", "params": {"rate": 1000, "burst": 1000}}])
    assert ps.admit(0, client_id="a", nbytes=600, records=99).allowed
    refused = ps.admit(0, client_id="b", nbytes=600, records=1)
    assert not refused.allowed and refused.unit == "bytes" and refused.retry_after_ns == 200 * MS
    assert ps.admit(0, client_id="c", nbytes=400).allowed


def test_no_matching_policy_admits():
    d = PolicySet().admit(0, client_id="x", records=10**9)
    assert d.allowed and d.retry_after_ns == 0 and d.delay_ns == 0


def test_negative_costs_are_refused_loudly():
    ps = PolicySet([records_policy()])
    with pytest.raises(ValueError):
        ps.admit(0, client_id="a", records=-1)


# -- decisions -------------------------------------------------------------------------------------------------
def test_all_or_nothing_and_the_largest_retry_after_with_literal_numbers():
    ps = PolicySet([
        {"name": "per-client", "scope": "client", "unit": "records", "params": {"rate": 10, "burst": 10}},
        {"name": "everyone", "scope": "global", "unit": "records", "params": {"rate": 100, "burst": 15}},
    ])
    assert ps.admit(0, client_id="a", records=10).allowed  # both charged 10
    refused = ps.admit(0, client_id="b", records=10)  # per-client would admit b; global has 5 left
    assert not refused.allowed and refused.policy == "everyone" and refused.retry_after_ns == 50 * MS
    assert ps.admit(0, client_id="b", records=5).allowed  # b's refusal charged nothing anywhere
    both = ps.admit(0, client_id="a", records=1)  # a: 100 ms to wait; everyone: 10 ms
    assert not both.allowed and both.policy == "per-client" and both.retry_after_ns == 100 * MS
    stats = ps.statistics()
    assert (stats["per-client"].admitted, stats["per-client"].throttled) == (2, 1)
    assert (stats["everyone"].admitted, stats["everyone"].throttled) == (2, 2)
    assert stats["everyone"].throttled_by_key == {"": 2} and stats["per-client"].throttled_by_key == {"a": 1}


def test_a_cost_that_never_fits_names_the_largest_cost_and_wins_over_rate_refusals():
    ps = PolicySet([
        {"name": "recs", "scope": "client", "unit": "records", "params": {"rate": 1, "burst": 100}},
        {"name": "size", "scope": "client", "unit": "bytes", "params": {"rate": 1, "burst": 1000}},
        {"name": "reqs", "scope": "client", "unit": "requests", "params": {"rate": 1, "burst": 1}},
    ])
    assert ps.admit(0, client_id="a", records=1, nbytes=1).allowed
    d = ps.admit(0, client_id="a", records=150, nbytes=10)
    assert d.reason == COST_EXCEEDS_CAPACITY and (d.policy, d.unit, d.max_cost) == ("recs", "records", 100)
    assert d.retry_after_ms is None
    assert ps.max_costs(client_id="a") == {"records": 100, "bytes": 1000}
    assert ps.statistics()["recs"].never_fits == 1 and ps.statistics()["reqs"].throttled == 1


def test_shaping_through_a_policy_delays_then_reports_queue_full():
    ps = PolicySet([{"name": "shape", "scope": "client", "unit": "requests", "mode": "shape",
                     "params": {"rate": 10, "burst": 1, "queue": 2}}])
    delays = [ps.admit(0, client_id="a").delay_ns for _ in range(3)]
    assert delays == [0, 100 * MS, 200 * MS]
    full = ps.admit(0, client_id="a")
    assert not full.allowed and full.reason == QUEUE_FULL and full.retry_after_ns == 100 * MS
    assert ps.statistics()["shape"].delayed == 2


def test_the_largest_delay_wins_when_several_policies_admit():
    ps = PolicySet([
        {"name": "s1", "scope": "client", "unit": "requests", "mode": "shape", "params": {"rate": 10, "queue": 5}},
        {"name": "s2", "scope": "global", "unit": "requests", "mode": "shape", "params": {"rate": 4, "queue": 5}},
    ])
    assert ps.admit(0, client_id="a").delay_ns == 0
    assert ps.admit(0, client_id="a").delay_ns == 250 * MS


def test_clock_going_backwards_in_the_policy_set_is_clamped():
    ps = PolicySet([records_policy(params={"rate": 1, "burst": 1})])
    assert ps.admit(10 * S, client_id="a").allowed
    assert ps.admit(5 * S, client_id="a").retry_after_ns == S


def test_replacing_and_deleting_policies_takes_effect_at_once():
    ps = PolicySet([records_policy(params={"rate": 1, "burst": 1})])
    assert ps.admit(0, client_id="a").allowed and not ps.admit(0, client_id="a").allowed
    ps.set(records_policy(params={"rate": 1, "burst": 5}))
    assert ps.admit(0, client_id="a", records=5).allowed  # replaced: starts afresh
    ps.delete("p")
    assert ps.admit(0, client_id="a", records=10**6).allowed and "p" not in ps and len(ps) == 0
    with pytest.raises(KeyError):
        ps.delete("p")


def test_per_key_throttle_counts_are_bounded(monkeypatch):
    monkeypatch.setattr(policy_module, "STATS_KEYS_MAX", 3)
    ps = PolicySet([records_policy(params={"rate": 1, "burst": 1})])
    for i in range(5):
        ps.admit(0, client_id=f"c{i}")
        ps.admit(0, client_id=f"c{i}")
    assert ps.statistics()["p"].throttled_by_key == {"c2": 1, "c3": 1, "c4": 1}


def test_keys_are_swept_across_policies():
    ps = PolicySet([records_policy()])
    for i in range(10):
        ps.admit(0, client_id=f"c{i}")
    assert ps.statistics()["p"].keys_tracked == 10
    assert ps.sweep(60 * S) == 10 and ps.statistics()["p"].keys_tracked == 0


# -- plug-ins --------------------------------------------------------------------------------------------------
def test_a_plugin_the_operator_registered_works_in_a_policy_by_name_or_spec():
    algorithms = Algorithms({"capped": PLUGIN})
    for name in ("capped", PLUGIN):
        ps = PolicySet([{"name": "plan", "scope": "client", "unit": "requests", "algorithm": name,
                         "params": {"rate": 1, "burst": 2, "cap": 3, "period_s": 60}}], algorithms)
        assert [ps.admit(0, client_id="a").allowed for _ in range(3)] == [True, True, False]
    assert algorithms.resolve(PLUGIN) is CappedLeakyBucket and PLUGIN not in ALGORITHMS


def test_a_plugin_registered_by_entry_point_is_found(monkeypatch):
    ep = metadata.EntryPoint(name="capped", value=PLUGIN, group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [ep] if group == ep.group else [])
    assert resolve("capped") is CappedLeakyBucket
    with pytest.raises(UnknownAlgorithm):
        resolve("other")


def test_register_adds_a_name_but_never_shadows_a_builtin(monkeypatch):
    monkeypatch.setattr(registry, "ALGORITHMS", dict(ALGORITHMS))
    register("capped", CappedLeakyBucket)
    assert resolve("capped") is CappedLeakyBucket
    with pytest.raises(ValueError):
        register("leaky_bucket", CappedLeakyBucket)
    with pytest.raises(UnknownAlgorithm):
        register("not_a_limiter", dict)


class Exploding(KeyedAlgorithm):
    """A broken plug-in: raises on a chosen call."""

    name = "exploding"
    capacity = 10
    fail_on = "decide"

    def __init__(self, *, mode="reject", max_keys=100):
        super().__init__(mode=mode, max_keys=max_keys)

    def decide(self, state, cost, now_ns, charge):
        if self.fail_on == "decide" or (self.fail_on == "charge" and charge):
            raise ZeroDivisionError("boom")
        from millpond.broker.core.limits import Decision
        return Decision(True, 0, 1), 1

    def is_fresh(self, state, now_ns):
        raise RuntimeError("sweep boom")


def test_a_raising_plugin_becomes_an_error_decision_and_charges_nothing(monkeypatch, caplog):
    monkeypatch.setitem(ALGORITHMS, "exploding", Exploding)
    ps = PolicySet([records_policy(name="good"), {"name": "bad", "scope": "global", "algorithm": "exploding"}])
    good = ps._active["good"].algorithm
    for _ in range(3):
        d = ps.admit(0, client_id="a", records=10)
        assert not d.allowed and d.reason == ERROR and d.policy == "bad" and "boom" in d.message
        assert d.retry_after_ns is None
    assert good.peek("a", 100, 0).allowed  # not charged
    stats = ps.statistics()["bad"]
    assert stats.errors == 3 and "ZeroDivisionError" in stats.last_error
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1  # logged once, counted always


def test_a_plugin_raising_alone_or_at_charge_time_is_contained(monkeypatch):
    monkeypatch.setitem(ALGORITHMS, "exploding", Exploding)
    alone = PolicySet([{"name": "bad", "scope": "global", "algorithm": "exploding"}])
    assert alone.admit(0).reason == ERROR
    monkeypatch.setattr(Exploding, "fail_on", "charge")
    ps = PolicySet([records_policy(name="good"), {"name": "bad", "scope": "global", "algorithm": "exploding"}])
    d = ps.admit(0, client_id="a")
    assert d.reason == ERROR and d.policy == "bad"
    monkeypatch.setattr(Exploding, "fail_on", "sweep")
    ps = PolicySet([{"name": "bad", "scope": "global", "algorithm": "exploding"}])
    assert ps.admit(0).allowed
    assert ps.sweep(S) == 0 and ps.statistics()["bad"].errors == 1  # a raising sweep is contained too


def test_rate_refusal_reason_is_rate():
    ps = PolicySet([records_policy(params={"rate": 1, "burst": 1})])
    ps.admit(0, client_id="a")
    d = ps.admit(0, client_id="a")
    assert d.reason == RATE and d.retry_after_s == 1.0 and d.retry_after_ms == 1000
