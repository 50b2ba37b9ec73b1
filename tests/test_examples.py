# The examples in examples/ keep working: each runs against an embedded broker on Trio's virtual clock
# (autojump_clock), and its figures are checked (balances, emails delivered, dead letters, records lost, admitted
# per second), not only that it ran. Each also runs once as the README's command, a subprocess, and the README
# lists every example.
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))  # as `python examples/NAME.py` has it: the examples import examplekit

from examples import (cache_invalidation, capacity, cqrs, event_sourcing, group_rebalance, limits_plugin, order_emails,
                      rate_limits, video_fanout)  # noqa: E402

RUNNABLE = ("order_emails", "video_fanout", "event_sourcing", "cqrs", "group_rebalance", "rate_limits",
            "cache_invalidation", "limits_plugin", "capacity")


async def test_order_emails_poll_and_push_deliver_each_email_once_and_dead_letter_the_bad_one(autojump_clock):
    lines: list[str] = []
    modes = await order_emails.run(say=lines.append)
    good = [order_id for order_id, email, _ in order_emails.ORDERS if not email.endswith("@invalid")]
    assert good == [1001, 1002, 1004, 1005, 1006]
    for name, mode in modes.items():
        assert sorted(mode.emails_sent) == good, name  # each good email sent once, none lost
        assert mode.failed_attempts == order_emails.MAX_RECEIVE_COUNT == 3, name
        assert mode.failures_by_order == {1003: 3}, name
        assert mode.dead_letters == [(1003, f"order-emails-{name}", 3)], name
        assert mode.left == (0, 0), name  # nothing left in the queue
        assert len(mode.order_answer_ms) == len(order_emails.ORDERS)
    poll, push = modes["poll"], modes["push"]
    # long polling: every receive but the last (cancelled while it waited) brought messages; none came back empty
    assert poll.empty_receives == 0 and 1 <= poll.requests <= 3 + len(order_emails.ORDERS)
    assert push.requests == 1 and 1 <= push.unacked_max <= order_emails.PREFETCH
    assert sum("dead letter: order 1003 to nobody@invalid" in line for line in lines) == 2
    assert any(re.match(r"\s+emails sent\s+5\s+5$", line) for line in lines)


async def test_video_fanout_reaches_three_queues_once_each_and_the_filter_keeps_only_raw_formats(autojump_clock):
    lines: list[str] = []
    out = await video_fanout.run(say=lines.append)
    every = [video_id for video_id, *_ in video_fanout.UPLOADS]
    raw_formats = [video_id for video_id, _, fmt, _ in video_fanout.UPLOADS if fmt in ("mov", "avi")]
    assert raw_formats == ["v1", "v3", "v6"]
    assert sorted(out.compressed) == raw_formats  # the filter policy on the format header
    assert sorted(out.notified) == every and sorted(out.analysed) == every  # once each, none lost
    assert out.subscriptions == {"compress": (3, 4), "notify-subscribers": (7, 0), "analytics": (7, 0)}
    assert out.processed == {"compress": 3, "notify-subscribers": 7, "analytics": 7}
    assert out.left == {"compress": 0, "notify-subscribers": 0, "analytics": 0}
    assert out.formats == {"mov": 2, "avi": 1, "mp4": 2, "webm": 2}
    assert out.minutes == sum(seconds // 60 for *_, seconds in video_fanout.UPLOADS) == 50
    assert out.followers_notified == 2 * 87 + 2 * 5400 + 3 * 1200
    assert sum("[compress]" in line for line in lines) == 3


async def test_event_sourcing_hydrates_balances_and_a_snapshot_replays_only_what_follows(autojump_clock):
    lines: list[str] = []
    r = await event_sourcing.run(say=lines.append)
    assert r.balances == {"alice": 100, "bob": 55, "carol": 5}  # alice: +50 -10 +60
    assert r.in_order  # each account's events in one partition, in the order appended
    assert set(r.partition_of) == {"alice", "bob", "carol"}
    assert all(0 <= p < event_sourcing.PARTITIONS for p in r.partition_of.values())
    assert sum(r.snapshot_offsets.values()) == len(event_sourcing.HISTORY) == 9
    assert r.replayed_after_snapshot == len(event_sourcing.LATER) == 4
    assert r.replayed_full == 13
    assert r.balances_full == r.balances_from_snapshot == {"alice": 70, "bob": 155, "carol": 5, "dave": 7}
    assert any("9 events replayed; balances: alice 100, bob 55, carol 5" in line for line in lines)
    assert "  the same state" in lines


def expected_stock() -> tuple[dict[str, tuple[int, int]], int]:
    """The CQRS example's commands folded by hand: (available, reserved) per SKU, and the rejected count."""
    available: dict[str, int] = {}
    reserved: dict[str, int] = {}
    rejected = 0
    for c in cqrs.commands():
        sku, n = c["sku"], c["quantity"]
        if c["type"] == "AddStock":
            available[sku] = available.get(sku, 0) + n
        elif available.get(sku, 0) >= n:
            available[sku] -= n
            reserved[sku] = reserved.get(sku, 0) + n
        else:
            rejected += 1
    return {sku: (available[sku], reserved.get(sku, 0)) for sku in available}, rejected


async def test_cqrs_projects_every_accepted_command_into_sqlite_and_measures_the_lag():
    lines: list[str] = []
    r = await cqrs.run(say=lines.append)
    stock, rejected = expected_stock()
    assert (r.accepted, r.rejected) == (cqrs.COMMANDS - rejected, rejected) and rejected > 0
    assert r.projected == r.accepted  # each event applied once, none lost
    assert r.write_side == r.read_model == stock
    assert len(r.lags_ms) == r.accepted and all(lag >= 0 for lag in r.lags_ms)
    assert 0 <= r.p50_ms <= r.p99_ms <= max(r.lags_ms) < 5000
    assert 0 <= r.ahead <= r.accepted and 0 <= r.stale_reads <= r.accepted
    assert any(line.startswith("eventual consistency") and f"p50 {r.p50_ms:.2f} ms" in line for line in lines)
    assert "it matches the write side" in lines


async def test_group_rebalance_hands_the_dead_workers_partitions_over_and_loses_nothing(autojump_clock):
    lines: list[str] = []
    r = await group_rebalance.run(say=lines.append)
    all_partitions = list(range(group_rebalance.PARTITIONS))
    assert sorted(r.before) == ["worker-1", "worker-2", "worker-3"]
    assert all(len(parts) == 2 for parts in r.before.values())
    assert sorted(p for parts in r.before.values() for p in parts) == all_partitions
    assert sorted(r.after) == ["worker-1", "worker-3"]  # the victim is gone
    assert sorted(p for parts in r.after.values() for p in parts) == all_partitions
    assert all(set(r.before[w]) < set(r.after[w]) for w in r.after)  # survivors keep theirs (sticky) and gain
    assert sorted(len(parts) for parts in r.after.values()) == [3, 3]
    # the broker waited for the session timeout (the victim never left), then rebalanced
    assert group_rebalance.SESSION_TIMEOUT_S <= r.rebalance_s < group_rebalance.SESSION_TIMEOUT_S + 5
    assert r.produced == 750 and r.processed_unique == 750 and r.lost == 0 and r.lag == 0
    assert sum(r.per_worker.values()) == r.produced + r.redelivered
    assert r.per_worker["worker-2"] > 0 and r.redelivered == 0  # it committed after each batch
    assert any("lost 0; group lag 0" in line for line in lines)


async def test_rate_limits_measure_the_five_algorithms_on_the_same_traffic(autojump_clock):
    lines: list[str] = []
    runs = await rate_limits.run(say=lines.append)
    offered = sum(count for _, count in rate_limits.TRAFFIC)
    assert offered == 65
    table = {name: r.per_second() for name, r in runs.items()}
    # (admitted, throttled) per second: 5 calm, a burst of 10 at 1.95 s, 10 at 2.05 s, then 20 per second
    assert table == {
        "leaky_bucket": [(5, 0), (1, 9), (1, 9), (10, 10), (10, 10)],
        "token_bucket": [(5, 0), (10, 0), (1, 9), (19, 1), (10, 10)],
        "fixed_window": [(5, 0), (10, 0), (10, 0), (10, 10), (10, 10)],
        "sliding_log": [(5, 0), (10, 0), (0, 10), (10, 10), (10, 10)],
        "sliding_window": [(5, 0), (9, 1), (1, 9), (9, 11), (9, 11)],
    }
    for r in runs.values():
        assert len(r.admitted) + len(r.throttled) == offered
        assert (r.broker_admitted, r.broker_throttled) == (len(r.admitted), len(r.throttled))  # the broker agrees
    across = {name: r.admitted_at(rate_limits.ACROSS_BOUNDARY) for name, r in runs.items()}
    assert across["fixed_window"] == 2 * rate_limits.LIMIT  # the boundary burst: twice the limit within 0.1 s
    assert across["sliding_window"] == across["sliding_log"] == rate_limits.LIMIT  # avoided
    worst = {name: r.worst_second() for name, r in runs.items()}
    assert worst == {"leaky_bucket": 10, "token_bucket": 19, "fixed_window": 20, "sliding_log": 10,
                     "sliding_window": 10}
    assert runs["sliding_log"].log_peak_entries() == 10
    assert any(re.match(r"\s+fixed_window\s+45/65\s+20\s+10 of 10\s+20 of 20\s+2 ", line) for line in lines)
    assert "the broker's policy counters (millpond limits list) agree with these counts" in lines


async def test_cache_invalidation_evicts_once_per_price_change_and_the_read_after_is_fresh():
    lines: list[str] = []
    out = await cache_invalidation.run(say=lines.append)
    changes = cache_invalidation.CHANGES
    assert out.evicted_per_change == [1] * len(changes)  # the repeat of the lost answer was ignored
    assert out.duplicates == 1 and out.delivered == len(changes)
    assert len(set(out.message_ids)) == len(changes)
    old = {"sku-1": 3999, "sku-2": 2450}
    expected_before = []
    for sku, cents in changes:  # before the eviction: the old price from the cache, the database already new
        expected_before.append((old[sku], "hit", cents))
        old[sku] = cents
    assert out.reads_before == expected_before
    assert out.reads_after == [(cents, "miss", cents) for _, cents in changes]  # fresh, loaded from the database
    assert len(out.publish_to_eviction_ms) == len(changes) and all(0 < ms < 5000 for ms in out.publish_to_eviction_ms)
    assert sum("stale)" in line for line in lines) == sum("fresh)" in line for line in lines) == len(changes)
    assert f"evictions per change: [1, 1, 1]; repeats ignored by message id: 1 ({out.message_ids[1]}, attempt 2)" \
        in [line.strip() for line in lines]
    assert lines[-1].startswith("publish to eviction: median ")


async def test_limits_plugin_registered_by_the_operator_throttles_producers_as_the_algorithm_implies(autojump_clock):
    lines: list[str] = []
    out = await limits_plugin.demo(say=lines.append)
    # rate 5/s, burst 5, cap 20 per 10 s; a request every 101 ms from a period's start, for 12 s
    assert out.per_second() == [(9, 1), (5, 5), (5, 5), (1, 9)] + [(0, 10)] * 3 + [(0, 9)] + [(0, 10)] * 2 \
        + [(9, 1), (5, 5)]
    assert out.per_period() == [20, 14]  # the cap, then the new period's first 2 s
    assert (len(out.admitted), len(out.throttled)) == (34, 85)
    assert 6 < max(out.retry_after_s) < 7  # refused at ~3.1 s by the cap: wait until the period ends
    # the patient producer: 5 at once, 15 at the rate, the rest once the next period starts 10 s later
    assert out.patient_sent == limits_plugin.PATIENT_RECORDS == 25
    assert 10.0 <= out.patient_s < 10.1 and out.patient_throttle_time_s > 9.9
    assert out.patient_throttled >= 16 and out.patient_policy == "plan"  # records 6 to 21 each refused at least once
    assert out.broker_admitted == 34 + 25 and out.broker_throttled == 85 + out.patient_throttled
    assert any(re.match(r"\s+3\s+1\s+9\s*$", line) for line in lines)
    assert lines[0] == "operator: limit algorithm capped = examples.limits_plugin:CappedLeakyBucket"


def test_capacity_arithmetic_with_a_stubbed_measured_rate():
    def stub(rate: float):
        return lambda payload_bytes: capacity.Measured(rate, rate * payload_bytes / 10**6, "given: stub")

    lines: list[str] = []
    est, plan = capacity.run(capacity.Load(8_640_000, 10, 3, 1000, 7), stub(10_000), say=lines.append)
    assert est == capacity.Estimate(events_per_day=86_400_000, avg_events_per_s=1000.0, peak_events_per_s=3000.0,
                                    avg_mb_per_s=1.0, peak_mb_per_s=3.0, gb_per_day=86.4, storage_gb=604.8,
                                    storage_tb=0.6048, storage_bytes=604_800_000_000)
    assert plan == capacity.Plan(measured_records_per_s=10_000, usable_per_process=5000.0, processes_for_rate=1,
                                 processes_for_storage=1, processes=1, peak_share=0.6, move_to=None,
                                 users_per_process=14_400_000)
    assert "  rate       average 1,000.0 events/s, peak 3,000.0 events/s" in lines
    assert "  storage    86.4 GB/day; 604.8 GB = 0.60 TB for 7 days (one copy: Kafka's usual replication factor " \
           "3 keeps three)" in lines
    assert lines[-1] == "verdict: 1 millpond process carries this load, at 60% of the planned rate at the peak"

    _, plan = capacity.run(capacity.Load(8_640_000, 10, 3, 1000, 7), stub(2000), say=lines.append)
    assert (plan.processes_for_rate, plan.processes, plan.peak_share, plan.move_to) == (3, 3, 1.0, None)
    assert lines[-1].startswith("verdict: 3 millpond processes carry this load, at 100% ")

    # 4.32e9 events/day: 50,000/s on average, 200,000/s at the peak; 500 B each, kept 30 days: 64.8 TB
    lines.clear()
    est, plan = capacity.run(capacity.Load(43_200_000, 100, 4, 500, 30), stub(80_000), say=lines.append)
    assert (est.avg_events_per_s, est.peak_events_per_s, est.avg_mb_per_s, est.peak_mb_per_s) == (50_000, 200_000,
                                                                                                 25.0, 100.0)
    assert (est.gb_per_day, est.storage_tb) == (2160.0, 64.8)
    assert (plan.usable_per_process, plan.processes_for_rate, plan.processes_for_storage) == (40_000, 5, 17)
    assert plan.processes == 17 > capacity.PROCESSES_MAX and plan.move_to == capacity.DISTRIBUTED["log"]
    assert "Apache Kafka or Redpanda" in lines[-1] and lines[-1].startswith("verdict: 17 processes, past the 4 ")
    _, plan = capacity.run(capacity.Load(43_200_000, 100, 4, 500, 30, kind="queue"), stub(80_000), say=lines.append)
    assert "Amazon SQS and SNS" in plan.move_to and "Amazon SQS and SNS" in lines[-1]


@pytest.mark.parametrize("name", RUNNABLE)
def test_each_example_runs_as_the_readme_says(name):
    # the plug-in is imported by the broker as examples.limits_plugin: the README runs it with PYTHONPATH=.
    env = {**os.environ, "PYTHONPATH": "."} if name == "limits_plugin" else None
    done = subprocess.run([sys.executable, f"examples/{name}.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    last = {"order_emails": "the order service never waits for it",
            "video_fanout": "follower notifications",
            "event_sourcing": "the same state",
            "cqrs": "it matches the write side",
            "group_rebalance": "per worker: worker-1",
            "rate_limits": "agree with these counts",
            "cache_invalidation": "publish to eviction: median",
            "limits_plugin": "the policy's counters (millpond limits list): admitted 59",
            "capacity": "verdict: 1 millpond process carries this load"}[name]
    assert last in done.stdout.strip().splitlines()[-1]


def test_the_readme_lists_every_example_with_its_command():
    readme = (ROOT / "README.md").read_text()
    for name in RUNNABLE:
        assert f"python examples/{name}.py" in readme, name
    on_disk = {p.stem for p in (ROOT / "examples").glob("*.py")} - {"examplekit"}  # what they share, no example
    assert on_disk == set(RUNNABLE)


@pytest.mark.parametrize("name", RUNNABLE)
def test_each_example_says_in_one_line_that_its_broker_cannot_be_reached(name):
    env = {**os.environ, "PYTHONPATH": "."} if name == "limits_plugin" else None
    done = subprocess.run([sys.executable, f"examples/{name}.py", "--broker", "127.0.0.1:1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1, done.stderr
    # capacity hands --broker to `millpond bench`, which says it: one line either way, no traceback
    prefix = "capacity: millpond bench failed (1): millpond bench: " if name == "capacity" else f"{name}: "
    assert done.stderr == prefix + "cannot connect to 127.0.0.1:1: connection refused\n"


def test_the_plugin_example_without_pythonpath_says_what_to_set():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "examples/limits_plugin.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 1
    assert done.stderr == ("limits_plugin: the broker imports the plug-in as examples.limits_plugin, which is not "
                           "importable here: run it from the repository's root with PYTHONPATH=. "
                           "(PYTHONPATH=. python examples/limits_plugin.py)\n")
