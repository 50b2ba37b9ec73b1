# Queues through the engine, with literal times and no Trio: long polls parked on a queue's wake key and woken by
# a send, a delay ending or another worker's timeout; answers held until the journal is durable; the timer's
# deadline; and a restart that replays the journal (messages, receive counts, timeouts, deletes, dedup, attributes).
from __future__ import annotations

import math

import pytest

from millpond.broker.core.outcomes import Answer, Wait
from millpond.broker.core.queues.api import (
    BatchDone,
    BatchFailure,
    ChangeVisibility,
    CreateQueue,
    DeleteEntry,
    DeleteMessage,
    DeleteMessageBatch,
    DeleteQueue,
    GetQueueAttributes,
    ListQueues,
    MessageSent,
    Queues,
    ReceiveMessages,
    SendEntry,
    SendMessage,
    SendMessageBatch,
    SetQueueAttributes,
    queue_key,
)
from millpond.broker.wire.batch import iter_batches
from millpond.broker.wire.errors import (
    InvalidParameterValueError,
    InvalidRequestError,
    QueueFullError,
    ThrottledError,
    UnknownQueueError,
)

from enginekit import T0_MS, answer, ctx, flush, handle, make_engine, settled

KEY = queue_key("q")


@pytest.fixture
def never(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    answer(engine, CreateQueue("q"))
    yield engine
    engine.close()


def test_a_long_poll_waits_on_the_queue_key_and_a_send_wakes_it(never):
    parked = handle(never, ReceiveMessages("q", max_messages=10, wait_s=20.0), 1.0)
    assert isinstance(parked, Wait) and parked.keys == (KEY,) and parked.until == 21.0
    never.take_woken()
    sent = answer(never, SendMessage("q", b"hi"), 2.0)
    assert type(sent) is MessageSent and sent.sequence_number is None
    assert never.take_woken() == {KEY}
    got = parked.resume(ctx(2.0), False)
    assert isinstance(got, Answer) and [(m.body, m.receive_count) for m in got.value.messages] == [(b"hi", 1)]


def test_a_long_poll_returns_when_a_delay_ends_and_when_another_workers_timeout_expires(never):
    answer(never, SendMessage("q", b"later", delay_s=5.0), 0.0)
    parked = handle(never, ReceiveMessages("q", wait_s=20.0), 0.0)
    assert isinstance(parked, Wait) and never.next_deadline() == 5.0
    assert never.tick(ctx(5.0)) == {KEY}
    [m] = parked.resume(ctx(5.0), False).value.messages
    parked = handle(never, ReceiveMessages("q", wait_s=20.0), 6.0)  # another worker
    assert isinstance(parked, Wait) and never.queues.next_deadline() == 35.0
    assert never.tick(ctx(35.0)) == {KEY}
    [again] = parked.resume(ctx(35.0), False).value.messages
    assert (again.message_id, again.receive_count) == (m.message_id, 2)


def test_a_woken_long_poll_with_nothing_receivable_waits_again_and_times_out_empty(never):
    parked = handle(never, ReceiveMessages("q", wait_s=3.0), 0.0)
    again = parked.resume(ctx(1.0), False)
    assert isinstance(again, Wait) and again.until == 3.0
    assert again.resume(ctx(3.0), True).value.messages == ()


def test_the_queues_receive_wait_is_the_default_long_poll_and_wait_s_is_checked(never):
    answer(never, SetQueueAttributes("q", receive_wait_s=4.0))
    parked = handle(never, ReceiveMessages("q"), 1.0)
    assert isinstance(parked, Wait) and parked.until == 5.0
    with pytest.raises(InvalidParameterValueError, match="wait_s"):
        handle(never, ReceiveMessages("q", wait_s=21.0))
    with pytest.raises(InvalidParameterValueError, match="max_messages"):
        handle(never, ReceiveMessages("q", max_messages=1001))


def test_deleting_a_queue_wakes_its_long_polls_and_they_answer_unknown_queue(never):
    parked = handle(never, ReceiveMessages("q", wait_s=20.0), 0.0)
    never.take_woken()
    answer(never, DeleteQueue("q"))
    assert KEY in never.take_woken()
    with pytest.raises(UnknownQueueError):
        parked.resume(ctx(0.1), False)


def test_batches_answer_per_entry_and_refuse_a_malformed_batch_whole(never):
    sent = answer(never, SendMessageBatch("q", (SendEntry("a", b"1"), SendEntry("b", b""), SendEntry("c", b"3"))))
    assert [e.id for e in sent.successful] == ["a", "c"]
    assert sent.failed == (BatchFailure("b", 64, "INVALID_PARAMETER_VALUE", "the message body must not be empty"),)
    got = answer(never, ReceiveMessages("q", max_messages=10)).messages
    done = answer(never, DeleteMessageBatch("q", (DeleteEntry("x", got[0].receipt_handle), DeleteEntry("y", "bad"))))
    assert done.successful == ("x",) and [(f.id, f.name) for f in done.failed] == [("y", "RECEIPT_HANDLE_INVALID")]
    assert type(done) is BatchDone
    # up to 1,000 entries a batch (SQS: 10)
    assert len(answer(never, SendMessageBatch("q", tuple(SendEntry(str(i), b"x") for i in range(1000)))).successful) \
        == 1000
    for entries, match in [((), "1-1000 entries, got 0"),
                           (tuple(SendEntry(str(i), b"x") for i in range(1001)), "1-1000 entries, got 1001"),
                           ((SendEntry("a", b"x"), SendEntry("a", b"y")), "distinct"),
                           ((SendEntry("no space", b"x"),), "entry id")]:
        with pytest.raises(InvalidRequestError, match=match):
            handle(never, SendMessageBatch("q", entries))


def test_list_and_attributes_answer_counts(never):
    answer(never, CreateQueue("other.fifo"))
    assert answer(never, ListQueues()) == Queues(("other.fifo", "q"))
    assert answer(never, ListQueues("o")) == Queues(("other.fifo",))
    answer(never, SendMessage("q", b"a"))
    answer(never, SendMessage("q", b"b", delay_s=10.0))
    answer(never, ReceiveMessages("q"))
    answer(never, SendMessage("q", b"c"))
    info = answer(never, GetQueueAttributes("q"))
    assert (info.messages_visible, info.messages_in_flight, info.messages_delayed) == (1, 1, 1)
    assert (info.fifo, info.visibility_timeout_s, info.retention_s, info.created_ms) == (False, 30.0, 345_600.0,
                                                                                          T0_MS)


def test_under_fsync_always_queue_changes_are_answered_once_the_journal_is_durable(tmp_path):
    engine = make_engine(tmp_path, fsync="always")
    outcome = handle(engine, CreateQueue("q"))
    assert isinstance(outcome, Wait) and outcome.until == math.inf
    flush(engine)
    assert outcome.resume(ctx(0.0), False).value.name == "q"
    sent = handle(engine, SendMessage("q", b"a"), 1.0)
    assert isinstance(sent, Wait)
    assert set(sent.keys) <= flush(engine)
    assert isinstance(sent.resume(ctx(1.0), False).value, MessageSent)
    engine.close()


def test_a_restart_replays_messages_receive_counts_timeouts_deletes_dedup_and_attributes(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    answer(engine, CreateQueue("q", visibility_timeout_s=60.0))
    answer(engine, CreateQueue("f.fifo"))
    answer(engine, SetQueueAttributes("q", delay_s=1.0))
    for body in (b"a", b"b", b"c"):
        answer(engine, SendMessage("q", body), 0.0)
    answer(engine, SendMessage("f.fifo", b"x", group_id="g", dedup_id="d"), 0.0)
    a, b, c = answer(engine, ReceiveMessages("q", max_messages=3), 2.0).messages
    answer(engine, DeleteMessage("q", a.receipt_handle), 3.0)
    answer(engine, ChangeVisibility("q", c.receipt_handle, 0.0), 3.0)
    engine.close()

    again = make_engine(tmp_path, opened_at=10.0, fsync="never")  # 10 s after the first one opened
    info = answer(again, GetQueueAttributes("q"), 10.0)
    assert (info.delay_s, info.visibility_timeout_s) == (1.0, 60.0)
    assert (info.messages_visible, info.messages_in_flight, info.messages_delayed) == (1, 1, 0)
    [got] = answer(again, ReceiveMessages("q", max_messages=10), 10.0).messages
    assert (got.body, got.receive_count, got.message_id) == (b"c", 2, c.message_id)
    answer(again, DeleteMessage("q", b.receipt_handle), 11.0)  # a handle from before the restart still deletes
    assert answer(again, GetQueueAttributes("q"), 11.0).messages_in_flight == 1
    assert answer(again, SendMessage("f.fifo", b"x", group_id="g", dedup_id="d"), 11.0).sequence_number == 1
    assert again.queues.next_deadline() == 70.0  # c's new timeout: the earliest queue timer
    again.close()


def test_a_send_passes_the_limits_admission_check_as_a_produce(never):
    never.limits.policies.set({"name": "q", "scope": "queue", "pattern": "q", "unit": "records", "mode": "reject",
                               "algorithm": "leaky_bucket", "params": {"rate": 1, "burst": 2}})
    answer(never, SendMessageBatch("q", (SendEntry("a", b"1"), SendEntry("b", b"2"))), 0.0)
    with pytest.raises(ThrottledError) as refused:
        handle(never, SendMessage("q", b"3"), 0.0)
    assert refused.value.details["retry_after_s"] == pytest.approx(1.0)
    assert answer(never, GetQueueAttributes("q"), 0.0).messages_visible == 2  # the refused one changed nothing
    assert type(answer(never, SendMessage("q", b"3"), 1.0)) is MessageSent


def test_a_shaped_send_waits_and_a_later_send_of_the_same_client_never_overtakes_it(never):
    answer(never, CreateQueue("f.fifo"))
    never.limits.policies.set({"name": "shape", "scope": "queue", "pattern": "f.fifo", "unit": "records",
                               "mode": "shape", "algorithm": "leaky_bucket",
                               "params": {"rate": 10, "burst": 1, "queue": 100}})
    send = lambda body, now: handle(never, SendMessage("f.fifo", body, group_id="g", dedup_id=body.decode()), now)
    assert send(b"1", 0.0).value.sequence_number == 1
    held = send(b"2", 0.0)
    assert isinstance(held, Wait) and held.keys == () and held.until == pytest.approx(0.1)
    behind = send(b"3", 0.05)
    assert isinstance(behind, Wait) and behind.until >= held.until
    assert held.resume(ctx(held.until), True).value.sequence_number == 2
    assert behind.resume(ctx(behind.until), True).value.sequence_number == 3


def test_a_full_queue_refuses_a_send_until_a_message_goes(tmp_path):
    engine = make_engine(tmp_path, fsync="never", queue_messages_max=2)
    answer(engine, CreateQueue("q"))
    answer(engine, SendMessage("q", b"1"))
    answer(engine, SendMessage("q", b"2"))
    with pytest.raises(QueueFullError, match="holds 2 messages"):
        handle(engine, SendMessage("q", b"3"))
    [m] = answer(engine, ReceiveMessages("q")).messages
    answer(engine, DeleteMessage("q", m.receipt_handle))
    assert type(answer(engine, SendMessage("q", b"3"))) is MessageSent
    engine.close()


def test_a_refused_message_is_not_charged_to_the_limits(never):
    never.limits.policies.set({"name": "q", "scope": "queue", "pattern": "q", "unit": "records", "mode": "reject",
                               "algorithm": "leaky_bucket", "params": {"rate": 1, "burst": 1}})
    with pytest.raises(InvalidParameterValueError, match="must not be empty"):
        handle(never, SendMessage("q", b""), 0.0)
    with pytest.raises(UnknownQueueError):
        handle(never, SendMessage("nope", b"x"), 0.0)
    assert type(answer(never, SendMessage("q", b"x"), 0.0)) is MessageSent  # the one message of the burst
    with pytest.raises(ThrottledError):
        handle(never, SendMessage("q", b"y"), 0.0)


# ---- fsync "always": the journal's records wait for the sync plan and go out as one write ----

def test_under_fsync_always_the_requests_before_a_sync_plan_share_one_journal_write(tmp_path):
    engine = make_engine(tmp_path, fsync="always")
    settled(engine, CreateQueue("q"))
    plog = engine.queues.journal.plog
    end, batches = plog.log_end_offset, plog.store.segments[-1].size
    sends = [handle(engine, SendMessage("q", b"m%d" % i), 1.0) for i in range(5)]
    assert all(isinstance(s, Wait) for s in sends)
    assert plog.log_end_offset == end and plog.store.segments[-1].size == batches  # nothing written yet
    assert engine.write_held()  # the end of the server's pass: the five records go as one batch, not yet synced
    assert plog.log_end_offset == end + 5 and plog.high_watermark == end
    assert len(list(iter_batches(plog.store.segments[-1].stem.with_suffix(".log").read_bytes()[batches:]))) == 1
    woken = flush(engine)
    assert plog.log_end_offset == plog.high_watermark == end + 5
    assert {k for s in sends for k in s.keys} <= woken
    ids = [s.resume(ctx(1.0), False).value.message_id for s in sends]
    got = settled(engine, ReceiveMessages("q", max_messages=10), 2.0)
    assert [m.message_id for m in got.messages] == ids  # in send order
    engine.close()
    again = make_engine(tmp_path, opened_at=3.0, fsync="always")
    info = settled(again, GetQueueAttributes("q"), 3.0)
    assert (info.messages_visible, info.messages_in_flight) == (0, 5)  # sends and their receives were replayed
    again.close()


def test_under_fsync_always_a_failed_journal_write_answers_its_waiters_storage_error(tmp_path, monkeypatch):
    from millpond.broker.wire.errors import StorageError

    engine = make_engine(tmp_path, fsync="always")
    settled(engine, CreateQueue("q"))
    plog = engine.queues.journal.plog
    sent = handle(engine, SendMessage("q", b"lost"), 1.0)

    def full(*args, **kwargs):
        raise StorageError("no space left on device")

    monkeypatch.setattr(plog, "append", full)
    woken = flush(engine)
    assert set(sent.keys) <= woken
    with pytest.raises(StorageError, match="fsync of __millpond_queues/0 failed"):
        sent.resume(ctx(1.0), False)
    monkeypatch.undo()  # the next write succeeds: later requests are answered as usual
    after = handle(engine, SendMessage("q", b"kept"), 2.0)
    assert set(after.keys) <= flush(engine)
    assert isinstance(after.resume(ctx(2.0), False).value, MessageSent)
    engine.close()


def test_under_fsync_always_held_records_are_written_before_they_pass_a_mebibyte(tmp_path):
    from millpond.broker.core.queues.journal import PENDING_BYTES_MAX

    engine = make_engine(tmp_path, fsync="always")
    settled(engine, CreateQueue("q", message_bytes_max=256 * 1024))
    plog = engine.queues.journal.plog
    end = plog.log_end_offset
    body = b"x" * (200 * 1024)
    n = PENDING_BYTES_MAX // len(body) + 1  # the last one would take the held records past the bound
    for i in range(n):
        handle(engine, SendMessage("q", body), 1.0)
    assert plog.log_end_offset == end + n - 1  # written when the next would have passed it; the last one held
    flush(engine)
    assert plog.log_end_offset == plog.high_watermark == end + n
    engine.close()


def test_under_fsync_never_each_request_is_written_at_once(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    answer(engine, CreateQueue("q"))
    plog = engine.queues.journal.plog
    end = plog.log_end_offset
    answer(engine, SendMessage("q", b"a"), 1.0)
    assert plog.log_end_offset == plog.high_watermark == end + 1
    engine.close()



def test_under_fsync_always_a_failed_write_at_the_mebibyte_bound_answers_every_waiter(tmp_path, monkeypatch):
    from millpond.broker.core.queues.journal import PENDING_BYTES_MAX
    from millpond.broker.wire.errors import StorageError

    engine = make_engine(tmp_path, fsync="always")
    settled(engine, CreateQueue("q", message_bytes_max=256 * 1024))
    plog = engine.queues.journal.plog
    body = b"x" * (200 * 1024)
    held = [handle(engine, SendMessage("q", body), 1.0) for _ in range(PENDING_BYTES_MAX // len(body))]

    def full(*args, **kwargs):
        raise StorageError("no space left on device")

    monkeypatch.setattr(plog, "append", full)
    with pytest.raises(StorageError, match="writing the journal failed"):
        handle(engine, SendMessage("q", body), 1.0)  # would pass the bound: the held records are written, and fail
    assert not engine.write_held()  # the end of the pass: their waiters are woken...
    woken = engine.take_woken()
    for w in held:
        assert set(w.keys) <= woken
        with pytest.raises(StorageError, match="fsync of __millpond_queues/0 failed"):  # ...and answered
            w.resume(ctx(1.0), False)
    assert engine.write_held()  # owed once
    monkeypatch.undo()
    engine.close()
