# The sync plan benchmark times real plans: every round's plan covers every partition of its count (asserted inside
# the run) and both ways leave every appended batch durable; the report names both ways per count (a smoke test,
# not a measurement).
from __future__ import annotations

import json

import trio

from millpond.bench import sync_plan
from millpond.broker.core.log import files


def test_both_ways_time_a_plan_per_round_and_the_report_has_every_count(tmp_path, capsys):
    per_plan = trio.run(sync_plan._measure, tmp_path, [1, 5], 2)
    assert set(per_plan) == {1, 5}
    ways = set(sync_plan.WAYS) if files._syncfs_call() is not None else set(sync_plan.WAYS) - {"syncfs"}
    assert all(set(w) == ways for w in per_plan.values())
    assert all(len(v) == 2 and all(x > 0 for x in v) for ways in per_plan.values() for v in ways.values())
    assert sync_plan.main(["--partitions", "2,4", "--rounds", "1", "--dir", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["ms_per_plan_median"]) == {"2", "4"}
    assert set(report["ms_per_plan_median"]["4"]) == ways


def test_every_appended_batch_is_durable_after_the_run(tmp_path, monkeypatch):
    marks = []
    real = sync_plan.LogManager.synced

    def synced(self, plan, error):
        moved = real(self, plan, error)
        marks.append(sorted(log.high_watermark for log, _ in plan.parts))
        return moved

    monkeypatch.setattr(sync_plan.LogManager, "synced", synced)
    per_plan = trio.run(sync_plan._measure, tmp_path, [3], 2)
    plans = 2 * len(per_plan[3])  # two rounds of every way (syncfs where the system has it)
    assert len(per_plan[3]) == (3 if files._syncfs_call() is not None else 2)
    assert marks == [[k, k, k] for k in range(1, plans + 1)]  # each plan covering all three partitions
