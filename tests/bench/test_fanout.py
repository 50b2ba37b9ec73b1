# `millpond bench fanout` (issue 12): every row runs end to end on tiny counts against a real broker subprocess at
# both fsync modes, and every queue is checked to hold exactly the records published; a row whose queues hold
# anything else aborts the run; each peer runs where it is installed, else is skipped with one line naming what is
# missing; a revision runs beside this tree and one without fan-out is skipped with its error; the goals are judged
# on the right rows and printed as [met]/[MISSED] lines. Speed is never asserted.
from __future__ import annotations

import json

import pytest

from millpond.bench import fanout
from millpond.bench.targets import fanout_kit, millpond_fanout, peerproc
from millpond.bench.targets.fanout_kit import BoundedPlan
from millpond.broker.cli import main

TINY = ["--warmup-s", "0", "--no-progress", "--json"]
RECORDS = 40
FAN_ROWS = [r for r in fanout.ROWS if r != fanout.LATENCY_ROW]
QUEUES = dict(zip(FAN_ROWS, fanout.SUBSCRIPTIONS))  # row -> how many queues it fans out to


def bench_fanout(capsys, *args: str) -> dict:
    assert main(["bench", "fanout", "--count", str(RECORDS), *args, *TINY]) == 0
    return json.loads(capsys.readouterr().out)


def rows_of(doc: dict, target: str) -> dict[tuple[str, str], dict]:
    return {(g["row"], g["fsync"]): g for g in doc["results"] if g["target"] == target}


def assert_every_record_reached_every_queue(rows: dict[tuple[str, str], dict]) -> None:
    for (row, _), g in rows.items():
        if row == fanout.LATENCY_ROW:
            assert g["messages"]["median"] == RECORDS  # one receipt per round
            assert 0 < g["p50_ms"]["median"] <= g["p99_ms"]["median"] <= g["max_ms"]["median"]
        else:
            assert g["records"]["median"] == RECORDS, row
            assert g["messages"]["median"] == RECORDS * QUEUES[row], row
            assert g["records_per_s"]["median"] > 0 and g["messages_per_s"]["median"] > 0
            assert g["p50_ms"]["median"] is None  # a fan-out row times the whole, not each record


# ---- bookkeeping ----

def test_a_time_bounded_plan_stops_at_its_record_bound_too():
    plan = BoundedPlan((b"x",), None, 3600.0, None, None, count_max=2500)
    assert [plan.next_batch(sent, 1000, 0.0) for sent in (0, 1000, 2000, 2500)] == [1000, 1000, 500, 0]
    assert plan.next_batch(0, 1000, 3600.0) == 0  # and at its duration
    counted = BoundedPlan((b"x",), 30, None, None, None, count_max=2500)
    assert [counted.next_batch(sent, 1000, 0.0) for sent in (0, 30)] == [30, 0]


# ---- end to end ----

def test_every_row_runs_against_millpond_at_each_fsync_mode_and_every_queue_holds_every_record(capsys):
    doc = bench_fanout(capsys, "--peers", "none", "--fsync", "always,never")
    mine = rows_of(doc, "millpond")
    assert set(mine) == {(r, m) for r in fanout.ROWS for m in ("always", "never")}
    assert_every_record_reached_every_queue(mine)
    for (row, _), g in mine.items():
        if row != fanout.LATENCY_ROW:
            assert g["messages_per_s"]["median"] == pytest.approx(g["messages"]["median"] / g["wall_s"]["median"])
            # measured, in whole clock ticks of the broker process (10 ms): a row this small may read 0
            assert g["server_cpu_us_per_message"]["median"] >= 0 and g["client_cpu_us_per_message"]["median"] > 0
    assert [g["goal"] for g in doc["goals"]] == [goal.text for goal in fanout.GOALS]  # no RabbitMQ in this run
    assert doc["skipped"] == {} and doc["subscriptions"] == [1, 3, 10]


def test_a_row_whose_queues_hold_other_than_the_records_published_aborts_the_run(capsys, monkeypatch):
    real = millpond_fanout.FANOUT_TARGET.fan_out

    def one_uncounted(address, fan, plan, tick, timeout_s):  # as if one acknowledged publish went uncounted
        got = real(address, fan, plan, tick, timeout_s)
        got.records -= 1
        return got

    monkeypatch.setattr(millpond_fanout.FANOUT_TARGET, "fan_out", one_uncounted)
    assert main(["bench", "fanout", "--count", "20", "--peers", "none", *TINY]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert ("ABORTED, no figures reported: millpond fan-out to 1: the queues hold [20] messages, 19 records were "
            "published") in captured.err


def test_records_too_small_for_the_latency_stamp_abort_before_anything_runs(capsys):
    assert main(["bench", "fanout", "--count", "5", "--record-bytes", "15", "--peers", "none", *TINY]) == 1
    assert "ABORTED, no figures reported: fanout: --record-bytes must be at least 16" in capsys.readouterr().err


def test_the_table_prints_each_goal_as_met_or_missed(capsys):
    assert main(["bench", "fanout", "--count", "20", "--peers", "none", "--warmup-s", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "fsync" in out and "fan-out to 10" in out and "publish-to-queue latency" in out and "machine: " in out
    for goal in fanout.GOALS:
        assert sum(line.strip() in (f"[met] {goal.text}", f"[MISSED] {goal.text}")
                   for line in (ln.split(":")[0] for ln in out.splitlines())) == 1


@pytest.mark.parametrize("peer", ["redis", "rabbitmq"])
def test_a_peer_runs_every_row_beside_millpond_where_installed_else_is_skipped_with_one_line(capsys, peer):
    doc = bench_fanout(capsys, "--peers", peer)
    names = ["redis", "redis-aof"] if peer == "redis" else ["rabbitmq"]
    for name in names:
        why = fanout_kit.get(name).missing()
        if why is not None:
            assert doc["skipped"][name] == why and why.endswith("see bench/peers/README.md")
            assert rows_of(doc, name) == {}
            continue
        rows = rows_of(doc, name)
        assert {row for row, _ in rows} == set(fanout.ROWS)
        assert_every_record_reached_every_queue(rows)
        assert doc["about"][name]["durability"]
    if peer == "rabbitmq" and "rabbitmq" not in doc["skipped"]:
        figure = {row: "messages_per_s" for row in FAN_ROWS} | {fanout.LATENCY_ROW: "p50_ms"}
        ahead = [g["goal"] for g in doc["goals"] if "RabbitMQ" in g["goal"]]
        assert ahead == [f"{row}: ahead of RabbitMQ durable ({figure[row]}), fsync=always" for row in fanout.ROWS]


def test_a_peer_without_its_server_binary_is_skipped_with_one_line(capsys, monkeypatch):
    monkeypatch.setattr(peerproc, "find_binary", lambda name: None)
    doc = bench_fanout(capsys, "--peers", "redis,rabbitmq")
    assert doc["skipped"]["redis"].startswith("redis-server not found (apt-get install redis-server)")
    assert doc["skipped"]["rabbitmq"].startswith("rabbitmq-server not found (apt-get install rabbitmq-server)")
    assert {g["target"] for g in doc["results"]} == {"millpond"}


def test_a_peer_without_a_fan_out_loop_is_skipped_with_one_line(capsys):
    doc = bench_fanout(capsys, "--peers", "nats", "--fsync", "never")
    assert doc["skipped"] == {"nats": "no fan-out loop for nats in this benchmark"}


def test_a_revision_runs_every_row_beside_this_tree_with_its_own_broker_and_client(capsys):
    doc = bench_fanout(capsys, "--peers", "none", "--against", "HEAD")
    (name,) = {g["target"] for g in doc["results"]} - {"millpond"}
    assert name.startswith("millpond@") and len(name) == len("millpond@") + 7
    rows = rows_of(doc, name)
    assert set(rows) == {(r, "always") for r in fanout.ROWS}
    assert_every_record_reached_every_queue(rows)
    mine = rows_of(doc, "millpond")
    for key, g in rows.items():
        assert fanout.queues.counterpart(g, doc["results"]) is mine[key]  # this tree / revision, like with like
    assert [g["goal"] for g in doc["goals"]] == [goal.text for goal in fanout.GOALS]  # judged on this tree


def test_a_revision_without_fan_out_is_skipped_with_its_error(capsys):
    before_fanout = "665e70e"  # the parent of the commit that gave the client publish and subscribe
    doc = bench_fanout(capsys, "--peers", "none", "--against", before_fanout)
    assert doc["skipped"] == {f"millpond@{before_fanout}": f"millpond@{before_fanout} could not run the fan-out "
                              "rows: AttributeError: 'Client' object has no attribute 'subscribe'"}
    assert {g["target"] for g in doc["results"]} == {"millpond"}


# ---- goals ----

def _row(target: str, row: str, fsync: str, rate: float | None, p50: float | None) -> dict:
    fig = lambda v: {"median": v, "min": v, "max": v}  # noqa: E731
    return {"target": target, "row": row, "fsync": fsync, "messages_per_s": fig(rate), "p50_ms": fig(p50)}


def test_goals_judge_millpond_at_fsync_always_and_each_row_against_rabbitmq():
    summary = [_row("millpond", "fan-out to 1", "always", 90_000, None),
               _row("millpond", "fan-out to 10", "always", 210_000, None),
               _row("millpond", "fan-out to 10", "never", 10.0, None),  # another mode: not judged
               _row("millpond", fanout.LATENCY_ROW, "always", None, 2.5),
               _row("rabbitmq", "fan-out to 1", "own", 95_000, None),
               _row("rabbitmq", "fan-out to 10", "own", 20_000, None),
               _row("rabbitmq", fanout.LATENCY_ROW, "own", None, 0.7)]
    got = [(g["goal"], g["met"]) for g in fanout.goals(summary)]
    assert got == [("fan-out to 10 subscriptions >= 200,000 messages/s into queues, fsync=always", True),
                   ("publish-to-queue p50 <= 2 ms, fsync=always", False),
                   ("fan-out to 1: ahead of RabbitMQ durable (messages_per_s), fsync=always", False),
                   ("fan-out to 10: ahead of RabbitMQ durable (messages_per_s), fsync=always", True),
                   ("publish-to-queue latency: ahead of RabbitMQ durable (p50_ms), fsync=always", False)]


# ---- bench/RESULTS.md ----

def test_the_results_section_renders_a_run_or_names_the_command_that_fills_it(capsys):
    doc = bench_fanout(capsys, "--peers", "none")
    section = "\n".join(fanout.markdown(doc))
    assert section.startswith("## Fan-out (issue 12)")
    assert "| fan-out to 10 | millpond | fsync=always |" in section
    assert "| publish-to-queue p50 <= 2 ms, fsync=always |" in section
    lines = section.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| row") or line.startswith("| goal"):  # the machine is stated above every table
            assert any(above.startswith("**Machine:**") for above in lines[max(0, i - 4):i])
    empty = "\n".join(fanout.markdown(None))
    assert f"`{fanout.RESULTS_COMMAND}`" in empty and "| row" not in empty


def test_full_runs_fanout_at_both_fsync_modes_and_results_md_gets_its_section():
    from millpond.bench import cli, profiles, report, results

    assert "fanout" in profiles.FULL_REPORTS
    args = cli.build_parser().parse_args(["full", "--peers", "none", "--count", "20", "--warmup-s", "0",
                                          "--no-progress"])
    doc = cli._own_report("fanout", args)
    assert {(g["row"], g["fsync"]) for g in doc["results"]} == {(r, m) for r in fanout.ROWS
                                                                for m in ("always", "never")}
    page = results.render({**report.document("full", doc["machine"], [], 1), "fanout": doc})
    section = page[page.index("## Fan-out (issue 12)"):]
    assert "| fan-out to 3 | millpond | fsync=never |" in section
    empty = results.render(report.document("full", doc["machine"], [], 1))
    assert f"`{fanout.RESULTS_COMMAND}`" in empty[empty.index("## Fan-out (issue 12)"):]
