# Peers in `millpond bench`, without needing any peer installed: a missing or unstartable peer is skipped with one
# line (never faked), targets run interleaved (A B A B across repeats), ratios millpond/peer are computed per figure
# from matching rows, and bench/RESULTS.md renders from a fixed result set with the machine above every table.
# Where a peer is installed, its test checks it runs; where it is not, the same test checks the skip message.
# Speed is never asserted.
from __future__ import annotations

import importlib.util
import json
from contextlib import contextmanager

import pytest

from millpond.bench import cli, plot, profiles, report, results, targets
from millpond.bench.plans import ConsumeOutcome, Params, ProduceOutcome
from millpond.bench.progress import Progress
from millpond.bench.targets import peerproc

PEER_TARGETS = sorted({t for names in targets.PEERS.values() for t in names})
MACHINE = {"cores": 2, "cpu_model": "Test CPU 9000", "memory_gib": 8.0, "os": "Linux 6", "python": "CPython 3.11.7"}


# ---- skipping ----

@pytest.mark.parametrize("name", PEER_TARGETS)
def test_each_peer_is_either_installed_or_names_what_is_missing(name):
    target = targets.get(name)
    why = target.missing()
    if why is None:
        about = target.describe()
        assert set(about) == {"server", "client", "durability"} and all(about.values())
    else:
        assert why.endswith("see bench/peers/README.md")
        assert "not found (apt-get install" in why or "not installed (pip install 'millpond[peers]')" in why


def test_a_peer_without_its_server_binary_is_skipped_with_one_line(monkeypatch):
    monkeypatch.setattr(peerproc, "find_binary", lambda name: None)
    notes: list[str] = []
    skipped: dict[str, str] = {}
    steps = profiles.compare(Params())
    assert cli.available_targets(["millpond", "redis", "redis-aof", "nats"], steps, skipped, notes.append) == [
        "millpond"]
    assert notes[0].startswith("skipping redis: redis-server not found (apt-get install redis-server)")
    assert notes[2].startswith("skipping nats: nats-server not found (apt-get install nats-server)")
    assert len(notes) == 3 and set(skipped) == {"redis", "redis-aof", "nats"}


def test_a_peer_without_its_client_package_is_skipped_with_the_pip_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(peerproc, "find_binary", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod == "pika" else real(mod, *a))
    assert targets.get("rabbitmq").missing() == ("Python package pika not installed (pip install "
                                                 "'millpond[peers]'); see bench/peers/README.md")


def test_peers_are_skipped_for_more_than_one_partition(monkeypatch):
    monkeypatch.setattr(peerproc, "missing", lambda *a: None)  # as if installed
    notes: list[str] = []
    assert cli.available_targets(["nats"], profiles.compare(Params(partitions=3)), {}, notes.append) == []
    assert notes == ["skipping nats: NATS JetStream runs with 1 partition (one stream, one subject) only"]


# ---- run order, with fake targets (no sockets) ----

class FakeTarget:
    def __init__(self, name: str, log: list[str], fails_to_start: bool = False) -> None:
        self.name = name
        self.log = log
        self.fails_to_start = fails_to_start
        self.held: dict[str, int] = {}

    def missing(self):
        return None

    @contextmanager
    def server(self, fsync, address):
        if self.fails_to_start:
            raise targets.PeerUnavailable(f"{self.name} did not start (not ready after 90 s)")
        self.log.append(f"{self.name}/{fsync}" if self.name == "millpond" else self.name)

        class S:
            pass

        s = S()
        s.address, s.fsync, s.cpu_s = "127.0.0.1:1", fsync if self.name == "millpond" else "own", lambda: None
        yield s

    def describe(self):
        return {"server": f"{self.name} 1.0", "client": "fake", "durability": "none"}

    def create_topic(self, address, topic, partitions):
        self.held[topic] = 0

    def topic_records(self, address, topic):
        return {0: (0, self.held[topic])}

    def produce(self, address, topic, plan, tick):
        self.held[topic] += plan.count
        return ProduceOutcome(plan.count, plan.count * 10, 0.0, 0.01, b"")

    def consume(self, address, topic, plan, tick):
        return ConsumeOutcome(plan.expected, 0.0, 0.01)


def _steps(modes=("always",)):
    steps = []
    for mode in modes:
        p = Params(count=100, duration_s=None, warmup_s=0, fsync=mode)
        steps += [profiles.Step("produce", p), profiles.Step("consume", p, reads_previous=True)]
    return steps


def _fakes(monkeypatch, log, **flags):
    fakes = {n: FakeTarget(n, log, flags.get(n, False)) for n in ("millpond", "peer-a", "peer-b")}
    monkeypatch.setattr(targets, "get", lambda name: fakes[name])
    return fakes


def test_targets_run_interleaved_across_repeats(monkeypatch):
    log: list[str] = []
    _fakes(monkeypatch, log)
    rows = cli.execute(_steps(), ["millpond", "peer-a", "peer-b"], 2, Progress(1, enabled=False))
    assert log == ["millpond/always", "peer-a", "peer-b"] * 2
    assert [r["step"] for r in rows[:4]] == ["millpond produce 100 B fsync=always", "millpond consume 100 B "
                                             "fsync=always", "peer-a produce 100 B", "peer-a consume 100 B"]


def test_a_peer_runs_each_step_once_per_repeat_whatever_millponds_fsync_modes(monkeypatch):
    log: list[str] = []
    _fakes(monkeypatch, log)
    rows = cli.execute(_steps(("always", "never")), ["millpond", "peer-a"], 1, Progress(1, enabled=False))
    assert log == ["millpond/always", "peer-a", "millpond/never"]
    assert sum(r["target"] == "peer-a" for r in rows) == 2


def test_a_peer_that_will_not_start_is_skipped_with_a_line_and_never_retried(monkeypatch, capsys):
    log: list[str] = []
    _fakes(monkeypatch, log, **{"peer-b": True})
    skipped: dict[str, str] = {}
    rows = cli.execute(_steps(), ["millpond", "peer-b"], 2, Progress(1, enabled=False), skipped)
    assert {r["target"] for r in rows} == {"millpond"}
    assert log == ["millpond/always"] * 2
    err = capsys.readouterr().err
    assert err.count("skipping peer-b: peer-b did not start (not ready after 90 s)") == 1
    assert skipped == {"peer-b": "peer-b did not start (not ready after 90 s)"}


# ---- which targets a command line asks for ----

@pytest.mark.parametrize("argv, expected", [
    (["compare", "--peers", "redis,nats"], ["millpond", "redis", "redis-aof", "nats"]),
    (["compare"], ["millpond", "redis", "redis-aof", "nats", "rabbitmq"]),
    (["full", "--peers", "none"], ["millpond"]),
    (["quick"], ["millpond"]),
    (["produce", "--target", "redis-aof"], ["redis-aof"]),
])
def test_peers_option_expands_to_targets(argv, expected):
    assert cli.target_names(cli.build_parser().parse_args(argv)) == expected


def test_an_unknown_peer_is_bad_usage(capsys):
    assert cli.main(["compare", "--peers", "redis,kafka"]) == 2
    assert "unknown peer 'kafka'" in capsys.readouterr().err


# ---- ratios and RESULTS.md from a fixed result set ----

def _row(target, workload, size, fsync, rps, p99=None):
    figs = {"records_per_s": rps, "mb_per_s": rps * size / 1e6, "p50_ms": None if p99 is None else p99 / 2,
            "p99_ms": p99, "max_ms": p99, "wall_s": 1.0, "records": rps, "latency_kind": None}
    label = f"{workload} {size:,} B" + (f" fsync={fsync}" if target == "millpond" else "")
    return {"target": target, "step": f"{target} {label}", "workload": workload, "record": f"{size:,} B",
            "record_bytes": size, "payload_file": None, "fsync": fsync, "partitions": 1, "producers": 1,
            "rate_per_s": None, "about": {} if target == "millpond" else
            {"server": "Redis 7.0.15", "client": "redis-py", "durability": "no fsync"}, "figures": figs}


FIXED = [_row("millpond", "produce", 100, "always", 400_000, p99=4.0),
         _row("millpond", "produce", 100, "never", 1_000_000, p99=2.0),
         _row("millpond", "consume", 100, "always", 800_000),
         _row("redis", "produce", 100, "rdb, no fsync", 100_000, p99=8.0),
         _row("redis", "consume", 100, "rdb, no fsync", 200_000),
         _row("redis", "produce", 1024, "rdb, no fsync", 50_000, p99=8.0)]


def test_ratio_is_millpond_over_peer_for_each_figure_of_the_same_measurement():
    got = {(r["workload"], r["millpond_fsync"]): r for r in report.ratios(report.summarize(FIXED))}
    assert set(got) == {("produce", "always"), ("produce", "never"), ("consume", "always")}  # 1 KiB: no millpond
    assert got["produce", "always"]["records_per_s"] == pytest.approx(4.0)
    assert got["produce", "always"]["mb_per_s"] == pytest.approx(4.0)
    assert got["produce", "always"]["p99_ms"] == pytest.approx(0.5)
    assert got["produce", "never"]["records_per_s"] == pytest.approx(10.0)
    assert got["consume", "always"]["records_per_s"] == pytest.approx(4.0)
    assert got["consume", "always"]["p99_ms"] is None  # consume has no latency: no ratio, not a zero


def test_table_puts_peers_beside_millpond_with_ratios_and_durability():
    out = report.table("compare", MACHINE, report.summarize(FIXED), 1, skipped={"nats": "nats-server not found"})
    assert "redis (rdb, no fsync): Redis 7.0.15; redis-py; no fsync" in out
    assert "skipped nats: nats-server not found" in out
    ratio_line = next(line for line in out.splitlines() if "redis (rdb, no fsync)" in line and "4.00x" in line)
    assert ratio_line.startswith("produce") and "0.50x" in ratio_line
    # judged on the ratio of the two rows measured side by side: 400,000 / 100,000
    assert "[met] 3x Redis Streams produce: records_per_s ratio = 4.00 (needs >= 3.0)" in out
    assert "[met] 3x Redis Streams consume: records_per_s ratio = 4.00 (needs >= 3.0)" in out


@pytest.mark.parametrize("rows, produce_line", [
    # the peer's row in the run: the ratio decides, whatever millpond's own figure
    ([_row("millpond", "produce", 100, "always", 250_000), _row("redis", "produce", 100, "rdb, no fsync", 100_000)],
     "[MISSED] 3x Redis Streams produce: records_per_s ratio = 2.50 (needs >= 3.0)"),
    ([_row("millpond", "produce", 100, "always", 90_000), _row("redis", "produce", 100, "rdb, no fsync", 20_000)],
     "[met] 3x Redis Streams produce: records_per_s ratio = 4.50 (needs >= 3.0)"),
    # no peer row (the quick bench): not judged, never against a figure from elsewhere
    ([_row("millpond", "produce", 100, "always", 50_000)],
     "[not judged] 3x Redis Streams produce: needs the redis row measured in the same run (millpond bench compare "
     "--peers redis)"),
    # a peer row at another size or millpond at another fsync mode is no pair for the goal
    ([_row("millpond", "produce", 100, "never", 900_000), _row("redis", "produce", 100, "rdb, no fsync", 1_000)],
     None),
])
def test_a_peer_goal_is_judged_only_on_the_ratio_measured_in_the_same_run(rows, produce_line):
    summary = report.summarize(rows)
    out = report.table("quick", MACHINE, summary, 1)
    lines = [line.strip() for line in out.splitlines() if "3x Redis Streams produce" in line]
    assert lines == ([] if produce_line is None else [produce_line])
    judged = [g for g in report.goals(summary) if g["goal"] == "3x Redis Streams produce"]
    if produce_line is None or "not judged" in produce_line:
        assert judged == []
    else:
        assert [(g["value"], g["met"]) for g in judged] == [
            (pytest.approx(rows[0]["figures"]["records_per_s"] / rows[1]["figures"]["records_per_s"]),
             "[met]" in produce_line)]
    assert "peers.md" not in out and "NOT in this run" not in out
    assert "peers.md" not in results.render(report.document("quick", MACHINE, summary, 1))


def _doc():
    summary = report.summarize(FIXED)
    return report.document("results", MACHINE, summary, 3, skipped={"rabbitmq": "rabbitmq did not start"})


def test_results_markdown_states_the_machine_above_every_table():
    md = results.render(_doc())
    lines = md.splitlines()
    tables = [i for i, line in enumerate(lines) if line.startswith("| ") and (i == 0 or not lines[i - 1]
                                                                              .startswith("|"))]
    assert len(tables) == 3  # fsync=always, fsync=never, goals
    for i in tables:
        machine_line = next(lines[j] for j in range(i - 1, -1, -1) if lines[j].startswith("**Machine:**"))
        assert "2 cores" in machine_line and "Test CPU 9000" in machine_line and "CPython 3.11.7" in machine_line
        assert "fsync mode:" in machine_line
        assert not any(lines[j].startswith("| ") for j in range(lines.index(machine_line), i))
    assert "## millpond fsync = always" in md and "## millpond fsync = never" in md
    assert "| produce | 100 B | redis | rdb, no fsync | 100,000 |" in md
    assert "4.00x" in md and "10.00x" in md
    assert "**rabbitmq not measured**: rabbitmq did not start" in md


def test_results_command_rerenders_from_a_saved_document(tmp_path, capsys):
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(_doc()))
    out = tmp_path / "RESULTS.md"
    assert cli.main(["results", "--from-json", str(saved), "--out", str(out)]) == 0
    assert out.read_text() == results.render(_doc(), command=f"millpond bench results --from-json {saved}")
    assert json.loads(out.with_suffix(".json").read_text())["machine"] == MACHINE


def test_plot_writes_charts_or_says_matplotlib_is_needed(tmp_path, capsys):
    if importlib.util.find_spec("matplotlib") is None:
        assert cli.main(["compare", "--plot", str(tmp_path)]) == 2
        assert "--plot needs matplotlib: pip install 'millpond[plot]'" in capsys.readouterr().err
    else:
        paths = plot.write(report.summarize(FIXED), tmp_path)
        assert [p.name for p in paths] == ["throughput.png", "latency-produce.png"]
        assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


# ---- a real peer when installed (else its skip line) ----

@pytest.mark.slow
@pytest.mark.parametrize("name", ["redis", "nats"])
def test_a_peer_runs_a_tiny_produce_or_is_skipped_with_a_line(name, capsys):
    rc = cli.main(["produce", "--target", name, "--count", "2000", "--warmup-s", "0", "--no-progress", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0
    doc = json.loads(out)
    why = targets.get(name).missing()
    if why:
        assert f"skipping {name}: {why}" in err and doc["results"] == [] and doc["skipped"] == {name: why}
    else:
        (result,) = doc["results"]
        assert result["target"] == name and result["records"]["median"] == 2000 and result["fsync"] != "always"
