# Dead-letter redrive tasks on the queue core with literal times: the rate (the n-th message moves at start + n /
# rate), what moves (bodies, attributes and ids kept; each to its own source by default; only what the DLQ held at
# the start), cancel, completion, failure, SQS's refusals, and a restart replaying the journal's records.
from __future__ import annotations

import pytest

from millpond.broker.core.queues import QueueManager
from millpond.broker.core.queues.journal import _from_record, _to_record
from millpond.broker.wire.errors import InvalidParameterValueError, ResourceNotFoundError, UnknownQueueError

from queuekit import Kit, ms


def dead_letters(k: Kit, source: str, bodies: list[bytes], at: float = 0.0, **send: object) -> list[str]:
    """Send ``bodies`` to ``source`` (max_receive_count 1), receive each once at ``at`` and let their 30 s timeout
    end: the next receive moves them to the DLQ. Returns their message ids."""
    ids = [k.send(source, b, at, attributes={"n": i, "tag": "x"}, **send)[0] for i, b in enumerate(bodies)]
    assert len(k.receive(source, at, len(bodies))) == len(bodies)
    assert k.receive(source, at + 30.0, 10) == []  # all moved, nothing delivered
    return ids


@pytest.fixture
def k() -> Kit:
    kit = Kit()
    kit.create("dlq")
    kit.create("a", dead_letter_queue="dlq", max_receive_count=1)
    kit.create("b", dead_letter_queue="dlq", max_receive_count=1)
    return kit


def moved(k: Kit, handle_source: str = "dlq") -> tuple[str, int, int]:
    [t] = k.m.tasks.list(handle_source, 1, 0.0)
    return t.status, t.moved, t.to_move


def test_a_redrive_at_rate_r_moves_floor_r_times_t_messages_after_t_seconds(k):
    dead_letters(k, "a", [b"m%d" % i for i in range(40)])
    assert k.counts("dlq", 30.0) == (40, 0, 0)
    k.m.tasks.start("dlq", None, 10, 100.0, ms(100.0))
    for t, expected in ((100.0, 0), (100.05, 0), (100.1, 1), (100.25, 2), (101.0, 10), (102.5, 25)):
        k.m.tick(t)
        assert moved(k) == ("RUNNING", expected, 40), t
        assert k.counts("a", t)[0] == expected
        assert k.counts("dlq", t)[0] == 40 - expected
    assert k.m.next_deadline() == pytest.approx(102.6)
    k.m.tick(104.0)
    assert moved(k) == ("COMPLETED", 40, 40)
    assert k.counts("dlq", 104.0) == (0, 0, 0)
    assert k.m.next_deadline() > 104.0 + 3600  # nothing left to move: only the messages' retention


def test_moved_messages_keep_body_attributes_and_id_and_go_to_their_own_source(k):
    ids_a = dead_letters(k, "a", [b"from-a-1", b"from-a-2"])
    ids_b = dead_letters(k, "b", [b"from-b"], at=1.0)
    k.m.tasks.start("dlq", None, 100, 50.0, ms(50.0))
    k.m.tick(60.0)
    got_a = k.receive("a", 60.0, 10)
    got_b = k.receive("b", 60.0, 10)
    assert [(d.body, d.message_id, d.attributes) for d in got_a] == [
        (b"from-a-1", ids_a[0], {"n": 0, "tag": "x"}), (b"from-a-2", ids_a[1], {"n": 1, "tag": "x"})]
    assert [(d.body, d.message_id, d.attributes) for d in got_b] == [(b"from-b", ids_b[0], {"n": 0, "tag": "x"})]
    # a new message of its source again: first receive there, no dead-letter source
    assert [(d.receive_count, d.dead_letter_source) for d in got_a + got_b] == [(1, None)] * 3
    assert moved(k) == ("COMPLETED", 3, 3)


def test_a_destination_takes_every_message(k):
    k.create("elsewhere")
    dead_letters(k, "a", [b"x"])
    dead_letters(k, "b", [b"y"], at=1.0)
    k.m.tasks.start("dlq", "elsewhere", 10, 40.0, ms(40.0))
    k.m.tick(41.0)
    assert sorted(k.bodies("elsewhere", 41.0)) == [b"x", b"y"]
    assert k.counts("a", 41.0) == k.counts("b", 41.0) == (0, 0, 0)
    [t] = k.m.tasks.list("dlq", 1, 41.0)
    assert (t.status, t.destination, t.rate_given) == ("COMPLETED", "elsewhere", 10)


def test_messages_arriving_after_the_start_stay_in_the_dlq(k):
    dead_letters(k, "a", [b"old1", b"old2"])
    k.m.tasks.start("dlq", None, 1, 40.0, ms(40.0))
    k.send("dlq", b"sent-directly", 40.5)
    k.m.tick(45.0)
    assert moved(k) == ("COMPLETED", 2, 2)
    assert k.bodies("dlq", 45.0) == [b"sent-directly"]
    assert k.bodies("a", 45.0) == [b"old1", b"old2"]


def test_cancel_stops_the_task_and_the_rest_stays_in_the_dlq(k):
    dead_letters(k, "a", [b"m%d" % i for i in range(10)])
    handle = k.m.tasks.start("dlq", None, 2, 40.0, ms(40.0))
    k.m.tick(41.5)
    task = k.m.tasks.cancel(handle, 41.5)
    assert (task.status, task.moved) == ("CANCELLED", 3)
    k.m.tick(100.0)
    assert moved(k) == ("CANCELLED", 3, 10)
    assert k.counts("dlq", 100.0) == (7, 0, 0)
    assert k.bodies("a", 100.0) == [b"m0", b"m1", b"m2"]
    with pytest.raises(InvalidParameterValueError, match="CANCELLED"):
        k.m.tasks.cancel(handle, 100.0)
    with pytest.raises(ResourceNotFoundError):
        k.m.tasks.cancel("dlq:0000000000000000", 100.0)
    # the queue is free for a new task, listed first
    k.m.tasks.start("dlq", None, 100, 100.0, ms(100.0))
    assert [t.status for t in k.m.tasks.list("dlq", 10, 100.0)] == ["RUNNING", "CANCELLED"]


def test_one_running_task_per_dlq_and_the_source_must_be_a_dlq(k):
    dead_letters(k, "a", [b"x"])
    k.m.tasks.start("dlq", None, 1, 40.0, ms(40.0))
    with pytest.raises(InvalidParameterValueError, match="running redrive task"):
        k.m.tasks.start("dlq", None, 1, 40.0, ms(40.0))
    with pytest.raises(InvalidParameterValueError, match="not the dead-letter queue of any queue"):
        k.m.tasks.start("a", None, 1, 40.0, ms(40.0))
    with pytest.raises(UnknownQueueError):
        k.m.tasks.start("nope", None, 1, 40.0, ms(40.0))


def test_the_rate_and_the_destination_are_checked(k):
    k.create("f.fifo")
    for rate in (0, 10_001):
        with pytest.raises(InvalidParameterValueError, match="messages_per_second"):
            k.m.tasks.start("dlq", None, rate, 0.0, ms(0.0))
    with pytest.raises(InvalidParameterValueError, match="differ"):
        k.m.tasks.start("dlq", "dlq", 1, 0.0, ms(0.0))
    with pytest.raises(InvalidParameterValueError, match="one type"):
        k.m.tasks.start("dlq", "f.fifo", 1, 0.0, ms(0.0))
    with pytest.raises(UnknownQueueError):
        k.m.tasks.start("dlq", "nope", 1, 0.0, ms(0.0))
    assert k.m.tasks.list("dlq", 10, 0.0) == []
    assert k.m.take_events()[-1][0] == "create"  # nothing was started


def test_a_task_waits_for_in_flight_dead_letters_without_a_burst_after(k):
    dead_letters(k, "a", [b"m0", b"m1", b"m2", b"m3"])
    held = k.receive("dlq", 40.0, 4, visibility_timeout_s=100.0)  # someone holds them all
    k.m.tasks.start("dlq", None, 1, 40.0, ms(40.0))
    k.m.tick(130.0)
    assert moved(k) == ("RUNNING", 0, 4)
    k.m.delete_message("dlq", held[0].receipt_handle, 130.0)
    k.m.tick(140.0)  # the other three are visible again: one at once, then one a second
    assert moved(k) == ("RUNNING", 1, 4)
    k.m.tick(141.0)
    assert moved(k) == ("RUNNING", 2, 4)
    k.m.tick(142.0)
    assert moved(k) == ("COMPLETED", 3, 4)  # the deleted one was not there to move
    assert k.bodies("a", 142.0) == [b"m1", b"m2", b"m3"]


def test_a_task_fails_when_a_message_cannot_go_back(k):
    dead_letters(k, "a", [b"x", b"y"])
    k.send("dlq", b"no-source", 31.0)  # sent straight to the DLQ before the start: one to move, from nowhere
    k.m.tasks.start("dlq", None, 10, 40.0, ms(40.0))
    k.m.tick(41.0)
    [t] = k.m.tasks.list("dlq", 1, 41.0)
    assert (t.status, t.moved) == ("FAILED", 2)
    assert "has no source queue" in t.failure_reason
    assert k.bodies("dlq", 41.0) == [b"no-source"]


def test_a_task_ends_with_its_dlq_and_fails_when_its_source_is_gone(k):
    dead_letters(k, "a", [b"x"])
    k.m.delete("a", 35.0)
    k.m.tasks.start("dlq", None, 10, 40.0, ms(40.0))  # "b" still names dlq as its DLQ
    k.m.tick(41.0)
    [t] = k.m.tasks.list("dlq", 1, 41.0)
    assert t.status == "FAILED" and "cannot go to queue 'a': it does not exist" in t.failure_reason
    k.m.tasks.start("dlq", "b", 10, 41.0, ms(41.0))
    k.m.delete("dlq", 41.0)
    assert k.m.tasks.running == {} and k.m.tasks.recent == {}


def test_fifo_dead_letters_go_back_in_group_order(k):
    k.create("dl.fifo")
    k.create("s.fifo", dead_letter_queue="dl.fifo", max_receive_count=1)
    for body, group in ((b"g1-1", "g1"), (b"g2-1", "g2"), (b"g1-2", "g1")):
        k.send("s.fifo", body, 0.0, group_id=group, dedup_id=body.decode())
    for at in (0.0, 30.0, 60.0, 90.0, 120.0):
        k.receive("s.fifo", at, 10)
    assert k.counts("dl.fifo", 120.0) == (3, 0, 0)
    k.m.tasks.start("dl.fifo", None, 10, 200.0, ms(200.0))
    k.m.tick(201.0)
    got = k.receive("s.fifo", 201.0, 2)
    assert [(d.body, d.group_id) for d in got] == [(b"g1-1", "g1"), (b"g1-2", "g1")]
    assert [d.body for d in k.receive("s.fifo", 201.0, 10)] == [b"g2-1"]


def test_a_restart_replays_a_running_task_and_it_resumes_at_its_rate(k):
    records: list[bytes] = []

    def journal(now: float) -> None:
        records.extend(_to_record(e, now, ms(now)) for e in k.m.take_events())

    dead_letters(k, "a", [b"m%d" % i for i in range(10)])
    handle = k.m.tasks.start("dlq", None, 2, 40.0, ms(40.0))
    journal(40.0)
    k.m.tick(42.0)
    journal(42.0)
    assert moved(k) == ("RUNNING", 4, 10)

    def restart(now: float) -> QueueManager:
        m = QueueManager()
        for r in records:
            m.apply(_from_record(r, now, ms(now)), now)
        m.take_events()
        m.tick(now)
        return m

    k.m = restart(50.0)  # down for 8 s: that time does not count towards the rate
    [t] = k.m.tasks.list("dlq", 1, 50.0)
    assert (t.handle, t.status, t.moved, t.to_move, t.rate_given) == (handle, "RUNNING", 4, 10, 2)
    assert k.counts("a", 50.0)[0] == 4 and k.counts("dlq", 50.0)[0] == 6
    k.m.tick(51.0)
    assert moved(k) == ("RUNNING", 6, 10)
    journal(51.0)
    k.m.tasks.cancel(handle, 51.0)
    journal(51.0)
    k.m = restart(60.0)
    assert moved(k) == ("CANCELLED", 6, 10)
    assert k.counts("dlq", 60.0)[0] == 4
    assert [d.body for d in k.receive("a", 60.0, 10)] == [b"m%d" % i for i in range(6)]


def test_a_restart_counts_only_what_the_dlq_held_when_the_task_started(k):
    """A message of the DLQ past its retention when a task starts is not one it moves, after a restart too (the
    replay runs no timers between events, so it still holds that message when the start is replayed)."""
    k.m.set_attributes("dlq", {"retention_s": 60.0}, 0.0, ms(0.0))
    dead_letters(k, "a", [b"old"])
    records = [_to_record(e, 0.0, ms(0.0)) for e in k.m.take_events()]
    k.m.tasks.start("dlq", None, 2, 70.0, ms(70.0))
    records += [_to_record(e, 70.0, ms(70.0)) for e in k.m.take_events()]
    assert moved(k) == ("RUNNING", 0, 0)
    m = QueueManager()
    for r in records:
        m.apply(_from_record(r, 71.0, ms(71.0)), 71.0)
    [t] = m.tasks.list("dlq", 1, 71.0)
    assert (t.moved, t.to_move) == (0, 0)
