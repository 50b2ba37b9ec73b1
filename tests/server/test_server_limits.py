# Limit policies through the server: THROTTLED with a sound retry-after, shaping in virtual time, a cost that can
# never fit, a failing plug-in contained, runtime changes that survive a restart, and another client unaffected.
from __future__ import annotations

import sys

import pytest
import trio

from millpond.broker.wire import errors
from millpond.broker.wire.batch import encode_batch

from serverkit import start_harness


def batch(n: int) -> bytes:
    return encode_batch([(1_700_000_000_000, None, b"v%d" % i, None) for i in range(n)])


POLICY = {"name": "slow", "scope": "client:app-*", "unit": "records", "algorithm": "leaky_bucket",
          "params": {"rate": 100, "burst": 10}, "mode": "reject"}


async def hello_as(h, client_id):
    c = await h.connect(hello=False)
    await c.ok("hello", {"protocol_version": 1, "client_id": client_id})
    return c


async def test_reject_mode_throttles_with_a_retry_after_that_works(nursery, tmp_path, autojump_clock):
    h = await start_harness(nursery, tmp_path / "d")
    admin = await h.connect()
    await admin.ok("create_topic", {"name": "t"})
    await admin.ok("limits_set", {"policy": POLICY})
    app = await hello_as(h, "app-1")
    other = await hello_as(h, "batch-job")
    assert (await app.ok("produce", {"topic": "t", "partition": 0, "batch": batch(10)}))["base_offset"] == 0
    code, answer = await app.call("produce", {"topic": "t", "partition": 0, "batch": batch(5)})
    assert code == errors.ThrottledError.code
    # 5 records at 100/s after a full burst: 50 ms
    assert answer["details"]["retry_after_ms"] == 50 and answer["details"]["policy"] == "slow"
    # a client the policy does not match is unaffected
    assert (await other.ok("produce", {"topic": "t", "partition": 0, "batch": batch(50)}))["base_offset"] == 10
    await trio.sleep(0.049)
    code, _ = await app.call("produce", {"topic": "t", "partition": 0, "batch": batch(5)})
    assert code == errors.ThrottledError.code
    await trio.sleep(0.001)
    assert (await app.ok("produce", {"topic": "t", "partition": 0, "batch": batch(5)}))["base_offset"] == 60
    listed = await admin.ok("limits_list", {})
    slow = [p for p in listed["policies"] if p["name"] == "slow"][0]
    assert slow["stats"]["throttled"] == 2 and slow["stats"]["throttled_by_key"] == {"app-1": 2}
    await h.broker.shutdown()


async def test_a_batch_larger_than_the_burst_is_refused_naming_what_fits(harness):
    admin = await harness.connect()
    await admin.ok("create_topic", {"name": "t"})
    await admin.ok("limits_set", {"policy": POLICY})
    app = await hello_as(harness, "app-2")
    code, answer = await app.call("produce", {"topic": "t", "partition": 0, "batch": batch(11)})
    assert code == errors.CostExceedsLimitError.code
    assert (answer["details"]["max_cost"], answer["details"]["unit"]) == (10, "records")


async def test_shape_mode_delays_instead_of_refusing(nursery, tmp_path, autojump_clock):
    h = await start_harness(nursery, tmp_path / "d")
    admin = await h.connect()
    await admin.ok("create_topic", {"name": "t"})
    await admin.ok("limits_set", {"policy": {**POLICY, "mode": "shape", "params": {"rate": 100, "burst": 10, "queue": 100}}})
    app = await hello_as(h, "app-3")
    start = trio.current_time()
    times = []
    for _ in range(4):
        await app.send("produce", {"topic": "t", "partition": 0, "batch": batch(10)})
    for _ in range(4):
        _, code, answer = await app.receive()
        assert code == 0
        times.append((answer["base_offset"], round(trio.current_time() - start, 3)))
    # the first fits the burst; each later 10 records leave 100 ms apart, in order
    assert times == [(0, 0.0), (10, 0.1), (20, 0.2), (30, 0.3)]
    await h.broker.shutdown()


async def test_policies_set_at_runtime_survive_a_restart_and_can_be_deleted(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path / "d")
    c = await h.connect()
    await c.ok("limits_set", {"policy": POLICY})
    await h.broker.shutdown()
    h2 = await start_harness(nursery, tmp_path / "d")
    c2 = await h2.connect()
    names = [p["name"] for p in (await c2.ok("limits_list", {}))["policies"]]
    assert sorted(names) == ["default", "slow"]
    await c2.ok("limits_delete", {"name": "slow"})
    code, answer = await c2.call("limits_delete", {"name": "slow"})
    assert code == errors.UnknownPolicyError.code and "slow" in answer["message"]
    await h2.broker.shutdown()
    h3 = await start_harness(nursery, tmp_path / "d")
    c3 = await h3.connect()
    assert [p["name"] for p in (await c3.ok("limits_list", {}))["policies"]] == ["default"]
    await h3.broker.shutdown()


@pytest.mark.parametrize(
    "policy, fragment",
    [
        ({**POLICY, "algorithm": "no_such_algorithm"}, "no_such_algorithm"),
        ({**POLICY, "scope": "planet"}, "scope"),
        ({**POLICY, "rate": 5}, "unknown limit policy key"),
        ({**POLICY, "params": {"rate": -1, "burst": 1}}, "rate"),
    ],
)
async def test_bad_policies_are_refused_with_the_reason(harness, policy, fragment):
    c = await harness.connect()
    code, answer = await c.call("limits_set", {"policy": policy})
    assert code == errors.InvalidConfigError.code and fragment in answer["message"]
    assert [p["name"] for p in (await c.ok("limits_list", {}))["policies"]] == ["default"]


class Exploding:
    """A plug-in algorithm that raises on every check."""

    capacity = None
    modes = ("reject",)

    def __init__(self, *, mode, max_keys):
        pass

    def acquire(self, key, cost, now_ns):
        raise RuntimeError("boom")

    peek = acquire

    def sweep(self, now_ns, max_checks=None):
        return 0

    def forget(self, key):
        pass

    def __len__(self):
        return 0


async def test_a_plug_in_that_raises_is_contained(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path / "d", limit_algorithms={"exploding": f"{__name__}:Exploding"})
    c = await h.connect()
    await c.ok("create_topic", {"name": "t"})
    await c.ok("limits_set", {"policy": {"name": "bad", "scope": "global", "unit": "requests",
                                         "algorithm": "exploding"}})
    code, answer = await c.call("produce", {"topic": "t", "partition": 0, "batch": batch(1)})
    assert code == errors.LimitPolicyFailedError.code and "boom" in answer["message"]
    await c.ok("limits_delete", {"name": "bad"})
    assert (await c.ok("produce", {"topic": "t", "partition": 0, "batch": batch(1)}))["base_offset"] == 0


async def test_default_policy_can_be_turned_off(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path / "d", default_limit_records_per_s=0)
    c = await h.connect()
    assert await c.ok("limits_list", {}) == {"policies": []}
    await h.broker.shutdown()


async def test_a_client_pipelining_shaped_produces_is_read_only_while_its_held_batches_fit(
        nursery, tmp_path, autojump_clock):
    # each held produce keeps its batch in the broker until its delay is over: what one connection may have held
    # is bounded like its unsent answers, so the broker stops reading it instead of buffering without bound
    h = await start_harness(nursery, tmp_path / "d", connection_outbox_bytes_max=4 * 1024 * 1024)
    admin = await h.connect()
    await admin.ok("create_topic", {"name": "t"})
    await admin.ok("limits_set", {"policy": {**POLICY, "unit": "bytes", "mode": "shape",
                                             "params": {"rate": 1_000_000, "burst": 1_000_000, "queue": 10**12}}})
    app = await hello_as(h, "app-1")
    big = encode_batch([(1_700_000_000_000, None, b"x" * 500_000, None)])
    for _ in range(40):  # 20 MB of batches that, shaped at 1 MB/s, would be held for 20 s in all
        await app.send("produce", {"topic": "t", "partition": 0, "batch": big})
    await trio.testing.wait_all_tasks_blocked()
    [conn] = [c for c in h.broker.connections if c.session.client_id == "app-1"]
    assert 4 * 1024 * 1024 <= conn.held_bytes < 4 * 1024 * 1024 + len(big) + 1024
    assert conn.frames < 14  # hello, 2 in the burst, then only as many as the bound holds
    for _ in range(40):  # as held batches are appended, the rest are read: nothing is lost
        _, code, answer = await app.receive()
        assert code == 0
    assert conn.held_bytes == 0


@pytest.mark.parametrize("body, code, words", [
    ({"policy": [1, 2]}, errors.InvalidRequestError.code, "policy"),
    ({"policy": {1: 2, "name": "p"}}, errors.InvalidRequestError.code, "'policy' key"),
    ({"policy": {b"name": "p"}}, errors.InvalidRequestError.code, "'policy' key"),
    ({}, errors.InvalidRequestError.code, "policy"),
    ({"policy": {"name": "p", "params": {1: 2}}}, errors.InvalidConfigError.code, "params"),
    ({"policy": {"name": "p", "params": [1]}}, errors.InvalidConfigError.code, "params"),
    ({"policy": {"name": "p", "scope": {"a": 1}}}, errors.InvalidConfigError.code, "scope"),
    ({"policy": {"name": ["p"]}}, errors.InvalidConfigError.code, "policy names"),
    ({"policy": {"name": "p", "max_keys": "many"}}, errors.InvalidConfigError.code, "max_keys"),
    ({"policy": {"name": "p", "params": {"rate": "fast", "burst": 1}}}, errors.InvalidConfigError.code, "rate"),
    ({"policy": {"name": "p", "params": {"rate": 1, "burst": 1, "x" * 100_000: 1}}}, errors.InvalidConfigError.code,
     "unknown parameter"),
    ({"policy": {"name": "p", "algorithm": "os:system"}}, errors.InvalidConfigError.code, "operator"),
    ({"policy": {"name": "p", "algorithm": "antigravity:X"}}, errors.InvalidConfigError.code, "operator"),
])
async def test_malformed_limits_set_is_refused_naming_the_field_and_imports_nothing(harness, caplog, body, code,
                                                                                    words):
    c = await harness.connect()
    got, answer = await c.call("limits_set", body)
    assert (got, words in answer["message"]) == (code, True), answer
    assert len(answer["message"]) <= 600 and "antigravity" not in sys.modules
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []
    assert [p["name"] for p in (await c.ok("limits_list", {}))["policies"]] == ["default"]


async def test_a_plugin_the_operator_registered_is_named_over_the_wire(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path / "d",
                            limit_algorithms={"capped": "examples.limits_plugin:CappedLeakyBucket"})
    c = await h.connect()
    applied = await c.ok("limits_set", {"policy": {"name": "plan", "algorithm": "capped", "scope": "global",
                                                   "params": {"rate": 1, "burst": 1, "cap": 5}}})
    assert applied["policy"]["algorithm"] == "capped"
