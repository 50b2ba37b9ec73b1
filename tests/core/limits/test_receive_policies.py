# Receive policies (`operation = "receive"`): which policies a queue receive or push is counted against (scopes
# client, queue, global; never a write policy, and a receive never charges a write policy), how many messages a
# receive may take now (a records policy's room), the refusal with its retry-after when none may, the charge of an
# answered receive, and the policies a receive cannot have (bytes, shape mode, topic scope). Literal times in ns.
from __future__ import annotations

import pytest

from millpond.broker.core.limits import RATE, Policy, PolicySet
from millpond.broker.wire.errors import InvalidConfigError
from limitkit import MS, S


def receive_policy(name="r", **kw):
    base = {"name": name, "scope": "client", "unit": "records", "operation": "receive",
            "params": {"rate": 10, "burst": 5}}
    base.update(kw)
    return base


def test_operation_round_trips_and_defaults_to_write():
    p = Policy.from_dict(receive_policy())
    assert p.operation == "receive" and p.to_dict()["operation"] == "receive"
    assert Policy.from_dict(p.to_dict()) == p
    assert Policy.from_dict({"name": "w", "params": {"rate": 1, "burst": 1}}).operation == "write"


@pytest.mark.parametrize("overrides,fragment", [
    ({"operation": "read"}, "operation must be one of write, receive, got 'read'"),
    ({"unit": "bytes"}, "a receive policy counts requests or records"),
    ({"mode": "shape", "params": {"rate": 10, "burst": 5, "queue": 10}}, "a receive policy's mode is reject"),
    ({"scope": "topic"}, "a receive policy's scope is client, queue or global"),
])
def test_a_receive_policy_that_cannot_apply_is_refused_naming_why(overrides, fragment):
    with pytest.raises(InvalidConfigError, match=fragment):
        Policy.from_dict(receive_policy(**overrides))


def test_a_receive_takes_at_most_a_records_policys_room_then_is_refused_until_it_refills():
    ps = PolicySet([receive_policy()])  # 5 at once, then 10 a second
    n, decision = ps.receivable(0, client_id="w", queue="jobs", wanted=10)
    assert (n, decision.allowed) == (5, True)  # asking charges nothing:
    assert ps.receivable(0, client_id="w", queue="jobs", wanted=3)[0] == 3
    ps.charge_receive(0, client_id="w", queue="jobs", records=5)
    n, refusal = ps.receivable(0, client_id="w", queue="jobs", wanted=10)
    assert (n, refusal.allowed, refusal.reason, refusal.retry_after_ns) == (0, False, RATE, 100 * MS)
    assert refusal.policy == "r" and refusal.unit == "records"
    assert ps.receivable(100 * MS, client_id="w", queue="jobs", wanted=10)[0] == 1
    assert ps.receivable(S, client_id="w", queue="jobs", wanted=10)[0] == 5
    # another client has its own room
    assert ps.receivable(0, client_id="other", queue="jobs", wanted=10)[0] == 5
    stats = ps.statistics()["r"]
    assert (stats.admitted, stats.throttled) == (1, 1)


def test_an_empty_answer_charges_a_request_and_no_messages():
    ps = PolicySet([receive_policy("reqs", unit="requests", params={"rate": 2, "burst": 2}), receive_policy()])
    for _ in range(2):
        ps.charge_receive(0, client_id="w", queue="jobs", records=0)
    n, refusal = ps.receivable(0, client_id="w", queue="jobs", wanted=10)
    assert (n, refusal.policy, refusal.retry_after_ns) == (0, "reqs", 500 * MS)
    assert ps.receivable(500 * MS, client_id="w", queue="jobs", wanted=10)[0] == 5  # the records untouched


def test_queue_and_global_scopes_apply_to_receives_by_queue_name():
    ps = PolicySet([receive_policy("q", scope="queue:jobs-*", params={"rate": 1, "burst": 2}),
                    receive_policy("all", scope="global", params={"rate": 100, "burst": 3})])
    assert ps.receivable(0, client_id="w", queue="jobs-1", wanted=10)[0] == 2
    assert ps.receivable(0, client_id="w", queue="other", wanted=10)[0] == 3
    ps.charge_receive(0, client_id="a", queue="jobs-1", records=2)
    assert ps.receivable(0, client_id="b", queue="jobs-1", wanted=10)[0] == 0  # the queue's room, any client
    assert ps.receivable(0, client_id="b", queue="other", wanted=10)[0] == 1  # global: 3 - 2


def test_receives_and_writes_are_counted_by_their_own_policies():
    write = {"name": "w", "scope": "client", "unit": "records", "params": {"rate": 10, "burst": 5}}
    ps = PolicySet([write])
    assert ps.receivable(0, client_id="c", queue="jobs", wanted=50)[0] == 50  # a write policy never limits one
    ps.charge_receive(0, client_id="c", queue="jobs", records=50)
    assert ps.admit(0, client_id="c", queue="jobs", records=5).allowed  # nor is charged for one
    ps = PolicySet([receive_policy()])
    assert ps.admit(0, client_id="c", queue="jobs", records=100).allowed  # a receive policy never limits a write
    assert ps.max_costs(client_id="c", queue="jobs") == {}  # nor splits a producer's batches
