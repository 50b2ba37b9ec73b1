# The send_await workload (awaited single-record sends, every one timed) and running this tree beside millpond
# revisions: with fake targets (no sockets) the run order alternates step by step with every broker up, ratios pair
# rows of the same fsync mode, the 5% goal is judged on them, and RESULTS.md gets a section for them; with the real
# broker and Redis (where installed; else its skip line) a tiny send_await runs end to end. Speed is never asserted.
from __future__ import annotations

import json
from contextlib import contextmanager

import pytest

from millpond.bench import cli, profiles, report, results, targets, workloads
from millpond.bench.plans import ConsumeOutcome, Params, ProduceOutcome
from millpond.bench.progress import Progress
from millpond.broker.cli import main

MACHINE = {"cores": 2, "cpu_model": "Test CPU 9000", "memory_gib": 8.0, "os": "Linux 6", "python": "CPython 3.11.7"}
TINY = ["--warmup-s", "0", "--no-progress", "--json"]


class Fake:
    """A target that records what it is asked in ``log``: server starts and stops, and each step."""

    def __init__(self, name: str, log: list[str], send_await: bool = True) -> None:
        self.name = name
        self.log = log
        self.held: dict[str, int] = {}
        if send_await:
            self.send_await = self._send_await

    def missing(self):
        return None

    def describe(self):
        return {"server": self.name, "client": "fake", "durability": "none"}

    @contextmanager
    def server(self, fsync, address):
        self.log.append(f"start {self.name}/{fsync}")

        class S:
            pass

        s = S()
        s.address, s.fsync, s.cpu_s = "127.0.0.1:1", fsync, lambda: None
        yield s
        self.log.append(f"stop {self.name}/{fsync}")

    def create_topic(self, address, topic, partitions):
        self.held[topic] = 0

    def topic_records(self, address, topic):
        return {0: (0, self.held[topic])}

    def produce(self, address, topic, plan, tick):
        self.log.append(f"{self.name} produce")
        self.held[topic] += plan.count
        return ProduceOutcome(plan.count, plan.count * 100, 0.0, 0.01, b"")

    def consume(self, address, topic, plan, tick):
        self.log.append(f"{self.name} consume")
        return ConsumeOutcome(plan.expected, 0.0, 0.01)

    def _send_await(self, address, topic, plan, tick):
        from millpond.bench import stats

        self.log.append(f"{self.name} send_await")
        hist = stats.new_histogram()
        for us in range(100, 100 + plan.count):
            stats.record_us(hist, us)
        self.held[topic] += plan.count
        return ProduceOutcome(plan.count, plan.count * 100, 0.0, 0.5, stats.encode(hist))


def _fakes(monkeypatch, log, names, without_send_await=()):
    fakes = {n: Fake(n, log, n not in without_send_await) for n in names}
    monkeypatch.setattr(targets, "get", lambda name: fakes[name])
    return fakes


def _steps(*workloads_, mode="always"):
    p = Params(count=100, duration_s=None, warmup_s=0, fsync=mode)
    return [profiles.Step(w, p, reads_previous=(w == "consume")) for w in workloads_]


# ---- send_await ----

def test_send_await_times_every_send_and_checks_the_broker_holds_them(monkeypatch):
    log: list[str] = []
    _fakes(monkeypatch, log, ["millpond"])
    (row,) = cli.execute(_steps("send_await"), ["millpond"], 1, Progress(1, enabled=False))
    figs = row["figures"]
    assert row["step"] == "millpond send_await 100 B fsync=always" and row["rate_per_s"] is None
    assert figs["records"] == 100 and figs["records_per_s"] == pytest.approx(200.0)  # 100 records in 0.5 s
    assert figs["samples"] == 100 and figs["latency_kind"] == "send"  # every send, not a sample of them
    assert 0.1 <= figs["p50_ms"] <= figs["p99_ms"] <= 0.2


def test_a_peer_without_a_send_await_loop_skips_only_those_steps(monkeypatch):
    log: list[str] = []
    _fakes(monkeypatch, log, ["millpond", "peer"], without_send_await=("peer",))
    steps = _steps("produce", "consume", "send_await")
    assert [s.workload for s in cli._steps_for("peer", steps)] == ["produce", "consume"]
    skipped: dict[str, str] = {}
    assert cli.available_targets(["peer"], _steps("send_await"), skipped, lambda t: None) == []
    assert skipped == {"peer": "send_await: no send_await loop for peer"}


def test_send_await_is_in_every_profile_at_100_bytes_and_has_a_dash_alias(capsys):
    for profile in ("quick", "compare", "full"):
        steps, _ = cli.plan(cli.build_parser().parse_args([profile]))
        sends = [s for s in steps if s.workload == "send_await"]
        assert sends and all(s.params.record_bytes == 100 for s in sends)
    args = cli.build_parser().parse_args(["send-await", "--count", "0"])
    assert cli.run(args) == 2 and args.workload == "send_await"  # the alias, then the usual checks
    assert "--count must be >= 1" in capsys.readouterr().err


# ---- fsync modes ----

def test_several_fsync_modes_run_in_turn_and_an_unknown_one_is_bad_usage(capsys):
    steps, _ = cli.plan(cli.build_parser().parse_args(["compare", "--fsync", "never,always"]))
    modes = [s.params.fsync for s in steps]
    assert modes == sorted(modes, key=["never", "always"].index) and set(modes) == {"never", "always"}
    assert len(steps) == 2 * len(profiles.compare(Params()))
    assert cli.main(["produce", "--fsync", "always,sometimes"]) == 2
    assert "--fsync: unknown mode 'sometimes'" in capsys.readouterr().err
    assert cli.main(["limits", "--fsync", "always,never"]) == 2


# ---- this tree beside revisions ----

def test_this_tree_and_revisions_take_turns_step_by_step_with_their_brokers_up_together(monkeypatch):
    log: list[str] = []
    names = ["millpond", "millpond@aaaaaaa", "peer"]
    _fakes(monkeypatch, log, names)
    steps = _steps("produce", "consume", "send_await") + _steps("produce", "consume", mode="never")
    rows = cli.execute(steps, names, 2, Progress(1, enabled=False))
    first_repeat = log[:log.index("start millpond/always", 1)]
    assert first_repeat == [
        "start millpond/always", "start millpond@aaaaaaa/always",
        "millpond produce", "millpond consume", "millpond@aaaaaaa produce", "millpond@aaaaaaa consume",
        "millpond@aaaaaaa send_await", "millpond send_await",  # the order turns at each unit of steps
        "stop millpond@aaaaaaa/always", "stop millpond/always",
        "start peer/always", "peer produce", "peer consume", "peer send_await", "stop peer/always",
        "start millpond/never", "start millpond@aaaaaaa/never",
        "millpond produce", "millpond consume", "millpond@aaaaaaa produce", "millpond@aaaaaaa consume",
        "stop millpond@aaaaaaa/never", "stop millpond/never"]  # the peer ran its steps once this repeat
    second = log[len(first_repeat):]
    assert second[2:4] == ["millpond@aaaaaaa produce", "millpond@aaaaaaa consume"]  # and at each repeat
    rev_rows = [r for r in rows if r["target"] == "millpond@aaaaaaa"]
    assert len(rev_rows) == 2 * 5 and {r["revision"] for r in rev_rows} == {"aaaaaaa"}
    assert rev_rows[0]["step"] == "millpond@aaaaaaa produce 100 B fsync=always"
    assert all(r["revision"] is None for r in rows if r["target"] != "millpond@aaaaaaa")


def _row(target, workload, size, fsync, per_repeat, p99=None):
    label = f"{workload} {size:,} B" + (f" fsync={fsync}" if target.startswith("millpond") else "")
    return [{"target": target, "step": f"{target} {label}", "workload": workload, "record": f"{size:,} B",
             "record_bytes": size, "payload_file": None, "fsync": fsync, "partitions": 1, "producers": 1,
             "rate_per_s": None, "about": {"server": "millpond at 5f7039c", "client": "its own"},
             "revision": target.split("@")[1] if "@" in target else None,
             "figures": {"records_per_s": rps, "mb_per_s": rps * size / 1e6, "p50_ms": p99, "p99_ms": p99,
                         "max_ms": p99, "wall_s": 1.0, "records": rps, "latency_kind": None}}
            for rps in per_repeat]


ROWS = (_row("millpond", "produce", 100, "always", [100_000, 96_000, 104_000], p99=2.0)
        + _row("millpond@5f7039c", "produce", 100, "always", [100_000, 100_000, 100_000], p99=4.0)
        + _row("millpond", "produce", 100, "never", [90_000, 90_000, 90_000])
        + _row("millpond@5f7039c", "produce", 100, "never", [100_000, 100_000, 100_000])
        + _row("millpond", "send_await", 100, "never", [9_000, 9_000, 9_000])
        + _row("redis", "send_await", 100, "rdb, no fsync", [10_000, 10_000, 10_000]))


def _summary():
    return report.summarize(ROWS)  # repeats stay in run order: the ratio of each pair is taken in that order


def test_revision_ratios_pair_rows_of_the_same_fsync_mode_and_judge_the_five_percent_goal():
    summary = _summary()
    got = {r["fsync"]: r for r in report.revision_ratios(summary)}
    assert set(got) == {"always", "never"}
    assert got["always"]["records_per_s"] == pytest.approx(1.0)
    assert got["always"]["records_per_s_range"] == pytest.approx([0.96, 1.04])  # repeats paired in run order
    assert got["always"]["p99_ms"] == pytest.approx(0.5)
    assert got["never"]["records_per_s"] == pytest.approx(0.9)
    # a revision is not a peer: the peer ratios leave it out
    assert {r["peer"] for r in report.ratios(summary)} == {"redis"}
    checked = {g["goal"]: g for g in report.goals(summary)}
    assert checked["produce 100 B within 5% of the revision or better, fsync=always"]["met"]
    assert not checked["produce 100 B within 5% of the revision or better, fsync=never"]["met"]
    assert checked["awaited send >= 5,000 rec/s, fsync=never"]["met"]  # 9,000/s


def test_table_and_results_page_show_this_tree_against_the_revision():
    summary = _summary()
    out = report.table("compare", MACHINE, summary, 3)
    line = next(ln for ln in out.splitlines() if "1.00x (0.96-1.04)" in ln)
    assert line.startswith("produce") and "always" in line and "millpond@5f7039c" in line and "0.50x" in line
    assert "millpond@5f7039c: millpond at 5f7039c; its own" in out
    assert "[MISSED] produce 100 B within 5% of the revision or better, fsync=never" in out
    md = results.render(report.document("compare", MACHINE, summary, 3))
    assert "## This tree against `millpond@5f7039c`" in md
    assert "| produce | 100 B | never | millpond | millpond@5f7039c | 0.90x |" in md
    assert "## Goals (issues 2, 5 and 8)" in md
    assert "| send_await | 100 B | redis | rdb, no fsync | 10,000 |" in md


def test_with_this_tree_hosted_like_a_revision_the_revision_is_compared_with_that_and_it_with_millpond():
    rows = (_row("millpond", "produce", 100, "never", [120_000, 120_000])
            + _row("millpond@worktree", "produce", 100, "never", [100_000, 100_000])
            + _row("millpond@5f7039c", "produce", 100, "never", [98_000, 98_000]))
    summary = report.summarize(rows)
    got = {r["revision"]: r for r in report.revision_ratios(summary)}
    assert got["millpond@5f7039c"]["this"] == "millpond@worktree"  # like with like: both in child processes
    assert got["millpond@5f7039c"]["records_per_s"] == pytest.approx(100 / 98)
    assert got["millpond@worktree"]["this"] == "millpond"  # the A/A check of the hosting: 1.2x here
    assert got["millpond@worktree"]["records_per_s"] == pytest.approx(1.2)
    judged = [g for g in report.goals(summary) if "revision" in g["goal"]]
    assert [g["step"] for g in judged] == ["millpond@worktree produce 100 B fsync=never / millpond@5f7039c produce "
                                           "100 B fsync=never"] and judged[0]["met"]  # the A/A line is no goal


def test_without_this_tree_the_first_revision_is_the_base_of_ratios_and_goals():
    rows = (_row("millpond@3d0310a", "produce", 100, "never", [96_000, 96_000])
            + _row("millpond@5f7039c", "produce", 100, "never", [100_000, 100_000])
            + _row("millpond@3d0310a", "send_await", 100, "never", [6_000, 6_000])
            + _row("redis", "send_await", 100, "rdb, no fsync", [10_000, 10_000]))
    summary = report.summarize(rows)
    assert report.base(summary) == "millpond@3d0310a"
    (r,) = report.revision_ratios(summary)
    assert (r["this"], r["revision"], r["records_per_s"]) == ("millpond@3d0310a", "millpond@5f7039c", 0.96)
    (peer,) = report.ratios(summary)
    assert (peer["millpond_target"], peer["records_per_s"]) == ("millpond@3d0310a", 0.6)
    checked = {g["goal"]: g["met"] for g in report.goals(summary)}
    assert checked == {">= 1M rec/s produce, fsync=never": False, "awaited send >= 5,000 rec/s, fsync=never": True,
                       "produce 100 B within 5% of the revision or better, fsync=never": True}
    out = report.table("compare", MACHINE, summary, 2)
    assert any(ln.startswith("send_await") and "millpond@3d0310a fsync=never" in ln and "0.60x" in ln
               for ln in out.splitlines())


# ---- real broker and Redis, tiny ----

@pytest.mark.slow
def test_send_await_against_the_real_broker(capsys):
    assert main(["bench", "send-await", "--count", "300", "--fsync", "never", *TINY]) == 0
    (row,) = json.loads(capsys.readouterr().out)["results"]
    assert (row["workload"], row["fsync"], row["records"]["median"]) == ("send_await", "never", 300)
    assert 0 < row["p50_ms"]["median"] <= row["p99_ms"]["median"] <= row["max_ms"]["median"]


@pytest.mark.slow
def test_send_await_against_redis_or_its_skip_line(capsys):
    rc = main(["bench", "send_await", "--target", "redis", "--count", "300", *TINY])
    out, err = capsys.readouterr()
    assert rc == 0
    doc = json.loads(out)
    why = targets.get("redis").missing()
    if why:
        assert f"skipping redis: {why}" in err and doc["results"] == []
    else:
        (row,) = doc["results"]
        assert row["records"]["median"] == 300 and row["repeats"][0]["samples"] == 300


def test_workloads_name_what_a_target_needs_for_send_await():
    assert workloads.TARGET_METHODS["send_await"] == ("send_await",)
    for name in ("millpond", "redis", "redis-aof", "redis-aof-always", "nats"):
        assert hasattr(targets.get(name), "send_await")
