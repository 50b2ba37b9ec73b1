# `millpond bench queues` (issue 11): every row runs end to end on tiny counts against a real broker subprocess and
# accounts for each message exactly once; each peer runs where it is installed, else is skipped with one line
# naming what is missing; the goals are judged on the right rows and printed as [met]/[MISSED] lines. The
# bookkeeping (claims, the exactly-once check) is checked on its own. Speed is never asserted.
from __future__ import annotations

import json

import pytest

from millpond.bench import queues
from millpond.bench.targets import peerproc, queue_kit
from millpond.bench.targets.queue_kit import Bodies, Claims, QueuePlan, Seen
from millpond.broker.cli import main

TINY = ["--warmup-s", "0", "--no-progress", "--json"]
MESSAGES = 40
STEADY_ROWS = [r for r in queues.ROWS if r != "long-poll wake-up"]


def bench_queues(capsys, *args: str) -> dict:
    assert main(["bench", "queues", "--count", str(MESSAGES), *args, *TINY]) == 0
    return json.loads(capsys.readouterr().out)


def rows_of(doc: dict, target: str) -> dict[tuple[str, str], dict]:
    return {(g["row"], g["fsync"]): g for g in doc["results"] if g["target"] == target}


# ---- bookkeeping ----

def test_claims_hand_out_each_sequence_number_once_up_to_the_count():
    claims = Claims(QueuePlan(body_bytes=16, batch=10, count=25))
    got = [claims.claim(10) for _ in range(4)]
    assert got == [range(0, 10), range(10, 20), range(20, 25), range(25, 25)]


def test_claims_without_a_count_stop_after_the_duration():
    claims = Claims(QueuePlan(body_bytes=16, batch=1, duration_s=0.0))
    assert claims.claim(1) == range(0, 1)  # the first claim starts the clock
    assert claims.claim(1) == range(0)


def test_claims_without_a_count_stop_at_the_bound_before_the_duration():
    claims = Claims(QueuePlan(body_bytes=16, batch=10, duration_s=3600.0, count_max=15))
    assert [claims.claim(10) for _ in range(3)] == [range(0, 10), range(10, 15), range(15, 15)]


def test_seen_accepts_each_message_once_and_names_a_repeat_or_a_stranger():
    bodies, seen = Bodies(20), Seen(3)
    assert len(bodies.body(2)) == 20
    assert [seen.add(bodies.body(s)) for s in (2, 0)] == ["", ""]
    assert seen.add(bodies.body(2)) == "message 2 received twice"
    assert seen.add(bodies.body(3)) == "message 3 was never sent (expected 0-2)"
    assert seen.count == 2


def test_a_wake_up_body_carries_its_send_stamp_and_number():
    latency_us, seq = queue_kit.wake_latency_us(queue_kit.wake_body(7, 100))
    assert seq == 7 and 0 <= latency_us < 1e6


def test_bodies_need_room_for_the_stamp():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Bodies(15)


# ---- end to end ----

def test_every_row_runs_against_millpond_at_each_fsync_mode_and_counts_every_message(capsys):
    doc = bench_queues(capsys, "--peers", "none", "--fsync", "always,never", "--record-bytes", "50")
    mine = rows_of(doc, "millpond")
    assert set(mine) == {(r, m) for r in queues.ROWS for m in ("always", "never")}
    for (row, _), g in mine.items():
        assert g["messages"]["median"] == MESSAGES, row
        if row in STEADY_ROWS:
            assert g["messages_per_s"]["median"] > 0
            assert g["client_cpu_us_per_message"]["median"] > 0 and g["server_cpu_us_per_message"]["median"] >= 0
            assert g["mb_per_s"]["median"] == pytest.approx(MESSAGES * 50 / 1e6 / g["wall_s"]["median"])
    for row in ("send batch 1", "send batch 10", "receive+delete batch 1", "receive+delete batch 10",
                "long-poll wake-up"):
        g = mine[(row, "always")]
        assert 0 < g["p50_ms"]["median"] <= g["p99_ms"]["median"] <= g["max_ms"]["median"]
    assert mine[("push prefetch 100", "always")]["p50_ms"]["median"] is None  # a push has no request to time
    assert [g["goal"] for g in doc["goals"]] == [goal.text for goal in queues.GOALS]  # no RabbitMQ in this run
    assert doc["skipped"] == {} and doc["in_flight"] == queues.IN_FLIGHT


def test_the_table_prints_each_goal_as_met_or_missed(capsys):
    assert main(["bench", "queues", "--count", "20", "--peers", "none", "--warmup-s", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "fsync" in out and "long-poll wake-up" in out and "machine: " in out
    for goal in queues.GOALS:
        assert sum(line.strip() in (f"[met] {goal.text}", f"[MISSED] {goal.text}")
                   for line in (ln.split(":")[0] for ln in out.splitlines())) == 1


@pytest.mark.parametrize("peer", ["redis", "rabbitmq"])
def test_a_peer_runs_beside_millpond_where_installed_else_is_skipped_with_one_line(capsys, peer):
    doc = bench_queues(capsys, "--peers", peer)
    names = ["redis", "redis-aof"] if peer == "redis" else ["rabbitmq"]
    for name in names:
        why = queue_kit.get(name).missing()
        if why is not None:
            assert doc["skipped"][name] == why and why.endswith("see bench/peers/README.md")
            assert rows_of(doc, name) == {}
            continue
        rows = rows_of(doc, name)
        ran = {row for row, _ in rows}
        if name.startswith("redis"):
            assert ran == set(queues.ROWS) - {"push prefetch 100"}
            assert doc["skipped"][f"{name} push"] == queue_kit.get(name).no_push
        else:
            assert ran == set(queues.ROWS)
        assert all(g["messages"]["median"] == MESSAGES for g in rows.values())
        assert doc["about"][name]["durability"]
    if peer == "rabbitmq" and "rabbitmq" not in doc["skipped"]:
        figure = {row: "messages_per_s" for row in queues.ROWS} | {"long-poll wake-up": "p50_ms"}
        ahead = [g["goal"] for g in doc["goals"] if "RabbitMQ" in g["goal"]]
        assert ahead == [f"{row}: ahead of RabbitMQ durable ({figure[row]}), fsync=always" for row in queues.ROWS]


def test_a_peer_without_its_server_binary_is_skipped_with_one_line(capsys, monkeypatch):
    monkeypatch.setattr(peerproc, "find_binary", lambda name: None)
    doc = bench_queues(capsys, "--peers", "redis,rabbitmq")
    assert doc["skipped"]["redis"].startswith("redis-server not found (apt-get install redis-server)")
    assert doc["skipped"]["rabbitmq"].startswith("rabbitmq-server not found (apt-get install rabbitmq-server)")
    assert {g["target"] for g in doc["results"]} == {"millpond"}


def test_a_peer_without_a_queue_loop_is_skipped_with_one_line(capsys):
    doc = bench_queues(capsys, "--peers", "nats", "--fsync", "never")
    assert doc["skipped"] == {"nats": "no queue loop for nats in this benchmark"}


def test_a_revision_runs_every_row_beside_this_tree_with_its_own_broker_and_client(capsys):
    doc = bench_queues(capsys, "--peers", "none", "--against", "HEAD")
    (name,) = {g["target"] for g in doc["results"]} - {"millpond"}
    assert name.startswith("millpond@") and len(name) == len("millpond@") + 7
    rows = rows_of(doc, name)
    assert set(rows) == {(r, "always") for r in queues.ROWS}
    assert all(g["messages"]["median"] == MESSAGES for g in rows.values())
    mine = rows_of(doc, "millpond")
    for key, g in rows.items():
        assert queues.counterpart(g, doc["results"]) is mine[key]  # this tree / revision, like with like
    assert [g["goal"] for g in doc["goals"]] == [goal.text for goal in queues.GOALS]  # judged on this tree


def test_a_revision_without_queues_is_skipped_with_its_error(capsys):
    before_queues = "6b34ef3"  # the parent of the commit that gave the client its queues
    doc = bench_queues(capsys, "--peers", "none", "--against", before_queues)
    assert doc["skipped"] == {f"millpond@{before_queues}": f"millpond@{before_queues} could not run the queue rows: "
                              "AttributeError: 'Client' object has no attribute 'create_queue'"}
    assert {g["target"] for g in doc["results"]} == {"millpond"}


# ---- goals ----

def _row(target: str, row: str, fsync: str, rate: float | None, p50: float | None) -> dict:
    fig = lambda v: {"median": v, "min": v, "max": v}  # noqa: E731
    return {"target": target, "row": row, "fsync": fsync, "messages_per_s": fig(rate), "p50_ms": fig(p50)}


def test_goals_judge_millpond_at_fsync_always_and_each_row_against_rabbitmq():
    summary = [_row("millpond", "send batch 10", "always", 120_000, 1.0),
               _row("millpond", "send batch 10", "never", 10.0, 1.0),  # another mode: not judged
               _row("millpond", "receive+delete batch 10", "always", 40_000, 1.0),
               _row("millpond", "long-poll wake-up", "always", None, 0.4),
               _row("rabbitmq", "send batch 10", "own", 15_000, 9.0),
               _row("rabbitmq", "receive+delete batch 10", "own", 45_000, 9.0),
               _row("rabbitmq", "long-poll wake-up", "own", None, 0.3)]
    got = [(g["goal"], g["met"]) for g in queues.goals(summary)]
    assert got == [("send batch 10 >= 100,000 messages/s, fsync=always", True),
                   ("receive+delete batch 10 >= 50,000 messages/s, fsync=always", False),
                   ("long-poll wake-up p50 <= 0.5 ms, fsync=always", True),
                   ("send batch 10: ahead of RabbitMQ durable (messages_per_s), fsync=always", True),
                   ("receive+delete batch 10: ahead of RabbitMQ durable (messages_per_s), fsync=always", False),
                   ("long-poll wake-up: ahead of RabbitMQ durable (p50_ms), fsync=always", False)]


# ---- full, results and RESULTS.md ----

def test_full_runs_queues_at_both_fsync_modes_and_results_md_gets_its_section():
    from millpond.bench import cli, report, results

    args = cli.build_parser().parse_args(["full", "--peers", "none", "--count", "20", "--warmup-s", "0",
                                          "--no-progress"])
    doc = cli._own_report("queues", args)
    assert {(g["row"], g["fsync"]) for g in doc["results"]} == {(r, m) for r in queues.ROWS
                                                                for m in ("always", "never")}
    page = results.render({**report.document("full", doc["machine"], [], 1), "queues": doc})
    section = page[page.index("## Queues (issue 11)"):]
    assert "| send batch 10 | millpond | fsync=always |" in section
    assert "| send batch 10 >= 100,000 messages/s, fsync=always |" in section
    tables = [i for i, line in enumerate(section.splitlines()) if line.startswith("| row") or line.startswith(
        "| goal")]
    for i in tables:  # the machine is stated above every table
        above = section.splitlines()[:i]
        assert any(line.startswith("**Machine:**") for line in above[-4:])
    empty = results.render(report.document("full", doc["machine"], [], 1))
    assert f"`{queues.RESULTS_COMMAND}`" in empty[empty.index("## Queues (issue 11)"):]
