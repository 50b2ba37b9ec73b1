# The wake-cost benchmark measures what it says: every mode's calls are real produces that the broker stores (the
# topic ends where the calls say), and the report names the three modes with their figures (a smoke test, not a
# measurement).
from __future__ import annotations

import json

import trio

from millpond.bench import wake_cost


def test_each_mode_times_real_produces_and_the_report_has_all_three(capsys):
    per_call = trio.run(wake_cost._measure, 20, 2, 0.00005)
    assert set(per_call) == set(wake_cost.MODES)
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in per_call.values())
    assert wake_cost.main(["--calls", "10", "--rounds", "1", "--gap-us", "50", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["us_per_call_median"]) == set(wake_cost.MODES)


def test_the_produces_are_stored(monkeypatch):
    ends = []
    original = wake_cost.Broker.shutdown

    async def shutdown(self):
        ends.append(self.log.topics["t"].partitions[0].log_end_offset)
        await original(self)

    monkeypatch.setattr(wake_cost.Broker, "shutdown", shutdown)
    trio.run(wake_cost._measure, 7, 2, 0.00001)
    assert ends == [1 + 7 * 2 * len(wake_cost.MODES)]  # the check produce, then calls x rounds x modes
