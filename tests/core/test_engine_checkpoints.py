# Checkpoints of the internal topics between requests (broker/core/log/internal.py): a checkpoint started by a
# request's append goes on in the engine's background steps when no request comes, each a bounded amount of state at
# the timer's interval, and ends; an idle engine with no checkpoint to write schedules no such work.
from __future__ import annotations

from millpond.broker.core.log.internal import CHECKPOINT_BACKGROUND_BYTES, CHECKPOINT_BACKGROUND_INTERVAL_S
from millpond.broker.core.queues.api import CreateQueue, GetQueueAttributes, SendEntry, SendMessageBatch

from enginekit import answer, ctx, flush, make_engine

BODY = b"m" * 100


def fill(engine, messages: int) -> None:
    for i in range(0, messages, 10):
        entries = tuple(SendEntry(f"e{j}", BODY) for j in range(10))
        answer(engine, SendMessageBatch("q", entries), 1.0)


def test_a_checkpoint_goes_on_between_requests_in_bounded_background_steps_and_ends(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    answer(engine, CreateQueue("q"), 1.0)
    fill(engine, 3000)
    journal = engine.queues.journal
    cps, plog = journal.checkpoints, journal.plog
    cps.bytes_min, cps.factor = 0, 0  # due at the next append
    assert engine.next_deadline() > 1.0 + CHECKPOINT_BACKGROUND_INTERVAL_S  # nothing to write: no timer for it
    start_offset = plog.log_start_offset

    answer(engine, SendMessageBatch("q", (SendEntry("last", BODY),)), 1.0)  # its append starts the checkpoint
    assert cps.writing
    started = plog.size_bytes
    now, steps = 1.0, []
    while cps.writing:
        at = engine.next_deadline()
        assert at <= now + CHECKPOINT_BACKGROUND_INTERVAL_S  # the timer comes back for it
        assert at >= now or steps == []  # one step per interval, not a loop of steps
        now = max(now, at)
        before = plog.size_bytes
        engine.tick(ctx(now))
        steps.append(plog.size_bytes - before)
        assert len(steps) < 100
    assert plog.size_bytes - started > 3 * CHECKPOINT_BACKGROUND_BYTES  # so it took several steps
    # each step about the background budget: a record over it is sized to what was left of the budget
    assert all(0 < s <= CHECKPOINT_BACKGROUND_BYTES + 2048 for s in steps), steps
    assert len(steps) >= 4
    flush(engine)
    engine.tick(ctx(now + 1.0))  # the end marker is durable: the segments it replaced go
    assert plog.log_start_offset > start_offset and cps.written == 1
    assert engine.next_deadline() > now + 1.0 + CHECKPOINT_BACKGROUND_INTERVAL_S  # done: no more timer for it
    engine.close()

    again = make_engine(tmp_path, opened_at=5.0, fsync="never")
    got = answer(again, GetQueueAttributes("q"), 5.0)
    assert got.messages_visible == 3001
    again.close()
