# `millpond bench` end to end against a real broker subprocess, with tiny workloads: it runs, prints a table with
# sane numbers, and --json carries the documented figure names with units. Speed is never asserted here.
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from millpond.bench import targets
from millpond.broker.cli import main

pytestmark = pytest.mark.slow

TINY = ["--warmup-s", "0", "--no-progress"]
FIGURE_NAMES = ("records_per_s", "mb_per_s", "p50_ms", "p99_ms", "max_ms")


def bench_json(capsys, *args: str) -> dict:
    assert main(["bench", *args, *TINY, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_produce_json_has_figures_with_units_and_counts_every_record(capsys):
    doc = bench_json(capsys, "produce", "--count", "3000", "--record-bytes", "50", "--fsync", "never")
    (result,) = doc["results"]
    assert (result["workload"], result["record_bytes"], result["fsync"]) == ("produce", 50, "never")
    for name in FIGURE_NAMES:
        assert set(result[name]) == {"median", "min", "max"}
    assert result["records"]["median"] == 3000
    assert result["records_per_s"]["median"] > 0
    # MB/s is payload bytes only, MB = 10^6 B: exactly records * size / wall time.
    assert result["mb_per_s"]["median"] == pytest.approx(3000 * 50 / 1e6 / result["wall_s"]["median"])
    assert 0 < result["p50_ms"]["median"] <= result["p99_ms"]["median"] <= result["max_ms"]["median"]
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["python"].startswith("CPython")
    # nothing but this run's figures: no reference figures, no goal naming a peer that did not run
    assert "reference" not in doc and not any("Redis" in g["goal"] for g in doc["goals"])


def test_keyed_produce_spreads_records_over_the_partitions_by_key(capsys):
    doc = bench_json(capsys, "produce", "--count", "2000", "--keys", "64", "--partitions", "8", "--fsync", "never")
    (result,) = doc["results"]
    assert (result["keys"], result["partitions"], result["records"]["median"]) == (64, 8, 2000)
    assert result["step"] == "millpond produce 100 B keys=64 partitions=8 fsync=never"


def test_keyed_produce_over_several_partition_counts_runs_each_and_judges_the_spread(capsys):
    doc = bench_json(capsys, "produce", "--count", "2000", "--keys", "64", "--partitions", "1,4", "--fsync", "never")
    assert [(r["partitions"], r["records"]["median"]) for r in doc["results"]] == [(1, 2000), (4, 2000)]
    (spread,) = [g for g in doc["goals"] if g["goal"].startswith("keyed produce")]
    one, four = (r["records_per_s"]["median"] for r in doc["results"])
    assert spread["value"] == pytest.approx(four / one)
    assert spread["goal"] == "keyed produce over 4 partitions >= 90% of 1 partition's records/s, fsync=never"


def test_consume_reads_back_exactly_what_was_produced(capsys):
    doc = bench_json(capsys, "consume", "--count", "2000", "--partitions", "2", "--repeat", "2")
    (result,) = doc["results"]
    assert len(result["repeats"]) == 2
    assert [r["records"] for r in result["repeats"]] == [2000, 2000]
    assert result["p99_ms"]["median"] is None  # a consume run has no latency figure


def test_e2e_measures_latency_from_a_consumer_process(capsys):
    doc = bench_json(capsys, "e2e", "--count", "300", "--rate", "1000", "--fsync", "never")
    (result,) = doc["results"]
    assert result["records"]["median"] == 300
    assert result["rate_per_s"] == 1000
    assert 0 < result["p50_ms"]["median"] <= result["max_ms"]["median"]


def test_payload_file_lines_become_the_records(capsys, tmp_path):
    lines = [b"first line", b"second, longer line", b"3"]
    path = tmp_path / "events.log"
    path.write_bytes(b"\n".join(lines) + b"\n")
    doc = bench_json(capsys, "produce", "--count", "300", "--payload-file", str(path))
    (result,) = doc["results"]
    expected_bytes = 100 * sum(map(len, lines))
    assert result["mb_per_s"]["median"] == pytest.approx(expected_bytes / 1e6 / result["wall_s"]["median"])


def test_table_states_machine_fsync_mode_and_judges_no_peer_goal_without_the_peer(capsys):
    assert main(["bench", "produce", "--count", "2000", *TINY]) == 0
    out = capsys.readouterr().out
    assert "machine: " in out and "fsync=always" in out
    # the quick bench runs no Redis: its goal is not judged, never marked missed against a figure from elsewhere
    assert "[not judged] 3x Redis Streams produce: needs the redis row measured in the same run (millpond bench " \
           "compare --peers redis)" in out
    assert "Redis" not in "".join(line for line in out.splitlines() if "[met]" in line or "[MISSED]" in line)
    assert "NOT in this run" not in out and "peers.md" not in out
    row = next(line for line in out.splitlines() if line.startswith("produce "))
    assert "100 B" in row and "always" in row


def test_broker_option_uses_a_running_broker(capsys):
    with targets.get("millpond").server("never", None) as running:  # a `millpond serve` subprocess
        doc = bench_json(capsys, "produce", "--count", "1000", "--broker", running.address)
    assert doc["results"][0]["fsync"] == "external"
    assert doc["results"][0]["records"]["median"] == 1000


def test_runs_of_separate_processes_against_one_broker_do_not_collide():
    # each run is its own process, its own name counter: before the run token both made bench-produce-1
    runs = [("produce", "--count", "500"), ("consume", "--count", "500"), ("produce", "--count", "500")]
    with targets.get("millpond").server("never", None) as running:
        for args in runs:
            r = subprocess.run([sys.executable, "-m", "millpond.bench", *args, *TINY, "--json",
                                "--broker", running.address], capture_output=True, timeout=120)
            assert r.returncode == 0, r.stderr.decode()
            assert json.loads(r.stdout)["results"][0]["records"]["median"] == 500
        from millpond.client.sync import connect

        with connect(running.address) as c:
            names = [n for n in c.list_topics() if n.startswith("bench-produce-")]
    assert len(names) == len(set(names)) == 3  # one per run (consume fills its own), none reused


@pytest.mark.parametrize("broker, why", [
    ("127.0.0.1:1", "cannot connect to 127.0.0.1:1: connection refused"),
    ("nohost.invalid:1", "cannot connect to nohost.invalid:1: host name 'nohost.invalid' does not resolve ("),
    ("127.0.0.1:0", "broker port must be 1-65535, got 0"),
])
def test_a_broker_that_cannot_be_reached_is_one_line_before_anything_runs(capsys, broker, why):
    assert main(["bench", "produce", "--broker", broker, *TINY]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"millpond bench: {why}") and err.count("\n") == 1 and "Traceback" not in err


def test_bad_usage_exits_2(capsys):
    assert main(["bench", "produce", "--count", "0"]) == 2
    assert "--count" in capsys.readouterr().err


def test_python_dash_m_bench_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "quick" in out.stdout and "--payload-file" in out.stdout
