# The crash harness in CI (bench/crash.py): the broker as a subprocess with fsync "always" under the client's load
# (an idempotent producer, a non-idempotent one, two group members committing), SIGKILLed at random moments and at
# every fault point of broker/core/log/faults.py, restarted and checked after each start and once more at the end.
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from millpond.bench.crash import FAULTS, run
from millpond.broker.core.log.faults import POINTS

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_sigkill_at_random_moments_and_at_every_fault_point_loses_and_reuses_nothing(tmp_path):
    figures = run(22, tmp_path, seed=10, fault_share=0.4, round_s=(0.3, 0.9), time_budget_s=100,
                  full_every=1, every_point_first=True)
    assert figures.kills >= 22  # more if a start armed with a fault point died in its recovery: counted, restarted
    assert set(FAULTS) == set(POINTS)
    assert {p: figures.fault_kills[p] >= 1 for p in POINTS} == {p: True for p in POINTS}  # each point reached
    assert figures.random_kills >= 5
    assert figures.checks >= figures.kills // 2 and figures.full_checks == figures.checks
    assert figures.records_acknowledged > 10_000 and figures.commits_acknowledged > 20
    assert figures.records_checked >= figures.records_acknowledged and figures.commits_checked > 0
    assert (figures.lost, figures.duplicated, figures.corrupt_reads, figures.offsets_reused,
            figures.commits_lost, figures.stalls) == (0, 0, 0, 0, 0, 0), figures.problems
    assert figures.problems == []


def test_a_misspelt_fault_point_stops_the_start(tmp_path):
    env = {**os.environ, "MILLPOND_CRASH_AT": "apend:3"}
    proc = subprocess.run([sys.executable, "-m", "millpond.broker.cli", "serve", "--data-dir", str(tmp_path / "d"),
                           "--port", "0"], capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode != 0
    assert "MILLPOND_CRASH_AT must be POINT:N with POINT one of append, fsync, roll, index, snapshot" in proc.stderr
