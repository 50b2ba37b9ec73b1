# The soak workload end to end with a tiny duration (its figures and per-second series carry their units), what
# `full` plans to run (every workload, checked without running it) and the RESULTS.md sections that come of it.
# Speed is never asserted here.
from __future__ import annotations

import json

import pytest

from millpond.bench import cli, profiles, report, results
from millpond.broker.cli import main

SOAK_FIGURES = ("records_per_s", "mb_per_s", "rss_mb_start", "rss_mb_end", "rss_mb_max")
SERIES_KEYS = {"t_s", "sent_per_s", "consumed_per_s", "lag_records", "rss_mb"}


@pytest.mark.slow
def test_soak_runs_end_to_end_with_documented_figures_and_skips_peers(capsys):
    assert main(["bench", "soak", "--duration-s", "1.5", "--rate", "1000", "--peers", "redis", "--warmup-s", "0",
                 "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    (result,) = doc["results"]
    assert (result["target"], result["workload"], result["rate_per_s"]) == ("millpond", "soak", 1000)
    for name in SOAK_FIGURES:
        assert set(result[name]) == {"median", "min", "max"}
        assert result[name]["median"] > 0
    assert result["records"]["median"] == 1500  # rate x duration, each consumed exactly once
    (figures,) = result["repeats"]
    assert figures["rss_mb_max"] >= max(figures["rss_mb_start"], figures["rss_mb_end"])
    assert figures["series"] and all(set(point) == SERIES_KEYS for point in figures["series"])
    # peers: one line each, never a figure
    assert set(doc["skipped"]) == {"redis", "redis-aof"}
    assert "skipping redis" in captured.err


def _plan(*argv: str) -> tuple[list[profiles.Step], tuple[str, ...]]:
    return cli.plan(cli.build_parser().parse_args(list(argv)))


def test_full_plans_every_workload():
    steps, reports = _plan("full")
    assert {s.workload for s in steps} | set(reports) == set(cli.WORKLOADS)
    shared = {(s.workload, s.params.record_bytes, s.params.fsync) for s in steps}
    for workload in ("produce", "consume", "e2e"):
        for size in profiles.SIZES:
            for mode in ("always", "never"):
                assert (workload, size, mode) in shared
    (soak,) = [s for s in steps if s.workload == "soak"]
    assert soak.params.duration_s == profiles.FULL_SOAK_S
    assert _plan("results") == (steps, reports)


def test_quick_is_unchanged_and_peers_only_get_the_shared_steps_of_full():
    steps, reports = _plan("quick")
    assert [s.label() for s in steps] == [
        "produce 100 B fsync=always", "consume 100 B fsync=always", "produce 1,024 B fsync=always",
        "consume 1,024 B fsync=always", "e2e 100 B @5,000/s fsync=always", "send_await 100 B fsync=always"]
    assert steps[-1].params.duration_s == 2.0  # quick stays about 30 s
    assert reports == ()
    full, _ = _plan("full")
    peer_steps = cli._steps_for("redis", full)
    assert peer_steps and {s.workload for s in peer_steps} == {"produce", "consume", "e2e", "send_await"}
    assert all(s.params.partitions == 1 for s in peer_steps)  # the groups' 6 partitions do not rule a peer out


def _row(workload: str, figures: dict, **extra: object) -> dict:
    base = {"target": "millpond", "step": f"millpond {workload} 100 B fsync=always", "workload": workload,
            "record": "100 B", "record_bytes": 100, "payload_file": None, "fsync": "always", "partitions": 1,
            "producers": 1, "rate_per_s": None, "about": {}}
    return {**base, **extra, "figures": {"records_per_s": None, "mb_per_s": None, "p50_ms": None, "p99_ms": None,
                                         "p999_ms": None, "max_ms": None, **figures}}


def test_results_page_has_every_section_with_the_machine_above_every_table():
    series = [{"t_s": t, "sent_per_s": 1000.0, "consumed_per_s": 1000.0, "lag_records": 3, "rss_mb": 30.0 + t}
              for t in (1.0, 2.0, 3.0)]
    rows = [_row("produce", {"records_per_s": 9e5, "mb_per_s": 90.0, "p50_ms": 1.0, "p99_ms": 2.0, "max_ms": 3.0}),
            _row("group_consume", {"records_per_s": 5e5, "mb_per_s": 50.0}, partitions=6),
            _row("rebalance", {"death_to_settled_s": 3.2, "join_to_settled_s": 0.4}, partitions=6),
            _row("soak", {"records_per_s": 1000.0, "mb_per_s": 0.1, "rss_mb_start": 30.0, "rss_mb_end": 33.0,
                          "rss_mb_max": 33.0, "series": series}, rate_per_s=1000, partitions=6)]
    mach = {"cores": 2, "cpu_model": "Test CPU", "python": "CPython 3.11.7", "os": "Linux"}
    algo = {"admit_ns": 300.0, "refuse_ns": 400.0, "peek_ns": 200.0, "bytes_per_key": 80.0}
    limits = {"machine": mach, "fsync": "never", "record_bytes": 100, "batch_bytes": None, "duration_s": 2.0,
              "pairs": 1, "micro": {"algorithms": {"leaky_bucket": algo}, "policy_set_admit_ns": {"1": 500.0}},
              "produce": {"runs": {"off": [{"records_per_s": 1e6}], "on": [{"records_per_s": 9e5}]},
                          "records_per_s_off": 1e6, "records_per_s_on": 9e5, "overhead_pct": 10.0,
                          "server_cpu_us_per_record_off": 1.0, "server_cpu_us_per_record_on": 1.1,
                          "server_cpu_overhead_pct": 10.0,
                          "policy": {"algorithm": "leaky_bucket", "params": {}, "scope": "client", "unit": "records"}}}
    doc = {**report.document("full", mach, report.summarize(rows), 1), "limits": limits}
    page = results.render(doc)
    for title in ("## millpond fsync = always", "## Consumer group rebalance", "## Soak", "## Limits"):
        assert title in page
    assert "group_consume" in page and "3.20" in page and "33.0" in page
    machine_since_table, in_table, tables = False, False, 0
    for line in page.splitlines():
        if line.startswith("**Machine:**"):
            machine_since_table = True
        if line.startswith("|") and not in_table:
            assert machine_since_table, f"a table without the machine above it: {line}"
            machine_since_table, tables = False, tables + 1
        in_table = line.startswith("|")
    assert tables >= 6
