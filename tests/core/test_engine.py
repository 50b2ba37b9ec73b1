# The engine as the server sees it, with literal times and no Trio: what a request waits for, what wakes it, when
# an answer may go out under each fsync mode, what the timer must run, and the errors of a refused request.
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from millpond.broker.core.groups.api import GroupHeartbeat, GroupJoin
from millpond.broker.core.log.api import (
    CreateTopic,
    DeleteTopic,
    Fetch,
    FetchPartition,
    Fetched,
    Produce,
    Produced,
    partition_key,
)
from millpond.broker.core.outcomes import Answer, Wait
from millpond.broker.wire.batch import encode_batch
from millpond.broker.wire.errors import (
    StorageError,
    UnknownApiError,
    UnknownMemberIdError,
    UnknownTopicOrPartitionError,
)

from enginekit import T0_MS, answer, ctx, flush, handle, make_engine

KEY = partition_key("t", 0)


def batch(value: bytes = b"v") -> bytes:
    return encode_batch([(T0_MS, None, value, None)])


def engine_with_topic(tmp_path, fsync: str):
    engine = make_engine(tmp_path, fsync=fsync)
    answer(engine, CreateTopic("t", 2))
    return engine


@pytest.fixture
def never(tmp_path):
    engine = engine_with_topic(tmp_path, "never")
    yield engine
    engine.close()


@pytest.fixture
def always(tmp_path):
    engine = engine_with_topic(tmp_path, "always")
    yield engine
    engine.close()


def test_a_fetch_with_no_data_waits_on_its_partitions_until_its_deadline(never):
    outcome = handle(never, Fetch((FetchPartition("t", 0, 0), FetchPartition("t", 1, 0)), max_wait_s=0.5), 10.0)
    assert isinstance(outcome, Wait)
    assert set(outcome.keys) == {partition_key("t", 0), partition_key("t", 1)} and outcome.until == 10.5


def test_an_append_wakes_the_fetch_and_its_resume_answers_the_records(never):
    parked = handle(never, Fetch((FetchPartition("t", 0, 0),), max_wait_s=5.0))
    never.take_woken()
    assert answer(never, Produce("t", 0, batch(b"hello"))) == Produced(0, 0, T0_MS)
    assert never.take_woken() == {KEY}
    fetched = parked.resume(ctx(0.1), False)
    assert isinstance(fetched, Answer) and type(fetched.value) is Fetched
    row = fetched.value.partitions[0]
    assert (row.topic, row.partition, row.code, row.high_watermark) == ("t", 0, 0, 1) and len(row.data) > 0


def test_a_woken_fetch_with_still_nothing_to_read_waits_again_and_a_timed_out_one_answers_empty(never):
    parked = handle(never, Fetch((FetchPartition("t", 0, 0),), max_wait_s=5.0))
    again = parked.resume(ctx(1.0), False)
    assert isinstance(again, Wait) and again.until == 5.0  # the original deadline, not a new one
    done = again.resume(ctx(5.0), True)
    assert isinstance(done, Answer) and done.value.partitions[0].data == b""


def test_a_fetch_with_max_wait_zero_answers_at_once(never):
    outcome = handle(never, Fetch((FetchPartition("t", 0, 0),)))
    assert isinstance(outcome, Answer) and outcome.value.partitions[0].data == b""


def test_under_fsync_always_a_produce_is_answered_only_after_its_fsync(always):
    outcome = handle(always, Produce("t", 0, batch()))
    assert isinstance(outcome, Wait) and outcome.keys == (KEY,) and outcome.until == math.inf
    assert always.take_woken() == set()  # not visible to consumers before it is durable either
    assert flush(always) == {KEY}
    assert outcome.resume(ctx(0.01), False) == Answer(Produced(0, 0, T0_MS))
    assert flush(always) == set()  # nothing left to sync


def test_a_failed_fsync_answers_the_waiting_produce_with_a_storage_error(always):
    outcome = handle(always, Produce("t", 0, batch()))
    plan = always.sync_plan()
    woken = always.synced(plan, OSError(5, "Input/output error"))
    assert woken == {KEY}
    with pytest.raises(StorageError, match="fsync of t/0 failed"):
        outcome.resume(ctx(0.01), False)


def test_deleting_a_topic_wakes_its_waiters_and_they_answer_unknown_topic(always):
    produce = handle(always, Produce("t", 1, batch()))
    always.take_woken()
    assert answer(always, DeleteTopic("t")) is None
    assert partition_key("t", 1) in always.take_woken()
    with pytest.raises(UnknownTopicOrPartitionError, match="deleted before the write was durable"):
        produce.resume(ctx(0.01), False)


def test_a_group_commit_waits_for_the_offsets_log_to_be_durable(always):
    from millpond.broker.core.groups.api import OffsetCommit, CommitEntry
    joined = answer(always, GroupJoin("g", ("t",)))
    beat = answer(always, GroupHeartbeat("g", joined.member_id, joined.member_epoch, ()), 0.1)
    assert len(beat.assignment) == 2
    outcome = handle(always, OffsetCommit("g", (CommitEntry("t", 0, 0),), beat.member_id, beat.member_epoch), 0.2)
    assert isinstance(outcome, Wait) and outcome.until == math.inf
    woken = flush(always)
    assert set(outcome.keys) <= woken
    assert outcome.resume(ctx(0.3), False) == Answer(None)


def test_the_timer_deadline_is_the_earliest_member_session_and_tick_expires_it(never):
    never.tick(ctx(100.0))  # the periodic work (limits sweep, retention) is next due well after the session
    joined = answer(never, GroupJoin("g", ("t",), session_timeout_s=2.0), 100.0)
    assert never.next_deadline() == 102.0
    never.tick(ctx(101.9))
    assert answer(never, GroupHeartbeat("g", joined.member_id, joined.member_epoch, ()), 101.9)
    assert never.next_deadline() == pytest.approx(103.9)
    never.tick(ctx(104.0))
    with pytest.raises(UnknownMemberIdError):
        handle(never, GroupHeartbeat("g", joined.member_id, joined.member_epoch, ()), 104.0)


def test_a_request_type_no_core_handles_is_refused(never):
    @dataclass(frozen=True)
    class Nonsense:
        pass

    with pytest.raises(UnknownApiError, match="Nonsense"):
        never.handle(Nonsense(), ctx(0.0))
