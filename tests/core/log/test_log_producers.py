# Idempotent producers (contract suite, every storage): a retried batch gets its original offsets and is not stored
# twice, a batch that skips ahead is refused, an older epoch is fenced; and (file store) the state is rebuilt from
# the log after a crash.
from __future__ import annotations

import pytest

from millpond.broker.core.log.producers import BATCHES_RETAINED, SEQUENCE_MAX, ProducerStates, next_sequence
from millpond.broker.wire.batch import check_batch, encode_batch
from millpond.broker.wire.errors import CorruptBatchError, InvalidProducerEpochError, OutOfOrderSequenceError

from logkit import BATCH_BYTES_MAX, T0, value_at


def idem(values: list[bytes], pid: int = 7, epoch: int = 0, seq: int = 0):
    blob = encode_batch([(T0, None, v, None) for v in values], producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    return blob, check_batch(blob, BATCH_BYTES_MAX)


def test_a_retried_batch_gets_its_original_offsets_and_is_stored_once(anyenv):
    m = anyenv.open()
    m.create_topic("t", 1, None, T0)
    log = m.partition("t", 0)
    assert log.append(*idem([b"a", b"b"], seq=0), T0) == 0
    assert log.append(*idem([b"c"], seq=2), T0) == 2
    assert log.append(*idem([b"a", b"b"], seq=0), T0) == 0  # retry of the first
    assert log.append(*idem([b"c"], seq=2), T0) == 2
    assert log.log_end_offset == 3
    assert log.append(*idem([b"d"], seq=3), T0) == 3


def test_a_batch_that_skips_ahead_is_refused_and_changes_nothing(anyenv):
    m = anyenv.open()
    m.create_topic("t", 1, None, T0)
    log = m.partition("t", 0)
    log.append(*idem([b"a"], seq=0), T0)
    with pytest.raises(OutOfOrderSequenceError, match="expected 1") as info:
        log.append(*idem([b"c"], seq=2), T0)
    assert info.value.details["expected_sequence"] == 1
    assert log.log_end_offset == 1
    assert log.append(*idem([b"b"], seq=1), T0) == 1


def test_an_older_epoch_is_fenced_and_a_new_epoch_starts_at_zero(anyenv):
    m = anyenv.open()
    m.create_topic("t", 1, None, T0)
    log = m.partition("t", 0)
    log.append(*idem([b"a"], epoch=1, seq=0), T0)
    with pytest.raises(InvalidProducerEpochError):
        log.append(*idem([b"x"], epoch=0, seq=1), T0)
    with pytest.raises(OutOfOrderSequenceError, match="not 0"):
        log.append(*idem([b"x"], epoch=2, seq=5), T0)
    assert log.append(*idem([b"x"], epoch=2, seq=0), T0) == 1


def test_producers_without_ids_and_other_ids_do_not_interfere(anyenv):
    m = anyenv.open()
    m.create_topic("t", 1, None, T0)
    log = m.partition("t", 0)
    plain = encode_batch([(T0, None, b"p", None)])
    log.append(*idem([b"a"], pid=1, seq=10), T0)  # unknown producer: any first sequence
    log.append(plain, check_batch(plain, BATCH_BYTES_MAX), T0)
    log.append(plain, check_batch(plain, BATCH_BYTES_MAX), T0)  # no id: appended twice, as asked
    assert log.append(*idem([b"b"], pid=2, seq=0), T0) == 3
    assert log.append(*idem([b"a"], pid=1, seq=10), T0) == 0


def test_state_is_rebuilt_from_the_log_after_a_crash(env):
    m = env.open()
    m.create_topic("t", 1, None, T0)
    log = m.partition("t", 0)
    for i in range(3):
        log.append(*idem([b"v%d" % i], seq=i), T0)
    env.crash(m)
    again = env.open().partition("t", 0)
    assert again.append(*idem([b"v2"], seq=2), T0) == 2  # the retry after the restart is recognised
    assert again.log_end_offset == 3
    with pytest.raises(OutOfOrderSequenceError):
        again.append(*idem([b"v9"], seq=9), T0)
    assert again.append(*idem([b"v3"], seq=3), T0) == 3
    assert value_at(again, 3) == b"v3"


def test_only_the_last_five_batches_are_recognised():
    states = ProducerStates()
    for i in range(BATCHES_RETAINED + 1):
        assert states.check(1, 0, i, 1) is None
        states.record(1, 0, i, 1, base_offset=100 + i)
    assert states.check(1, 0, 5, 1) == 105 and states.check(1, 0, 1, 1) == 101
    with pytest.raises(OutOfOrderSequenceError):
        states.check(1, 0, 0, 1)  # fell out of the window: neither a known retry nor next in line


def test_sequences_wrap_after_int32_max():
    states = ProducerStates()
    states.record(1, 0, SEQUENCE_MAX - 1, 2, base_offset=0)
    assert next_sequence(SEQUENCE_MAX - 1, 2) == 0
    assert states.check(1, 0, 0, 5) is None
    with pytest.raises(OutOfOrderSequenceError):
        states.check(1, 0, 1, 5)


def test_an_idempotent_batch_needs_a_sequence():
    blob = encode_batch([(T0, None, b"a", None)], producer_id=3, producer_epoch=0, base_sequence=-1)
    with pytest.raises(CorruptBatchError, match="base_sequence"):
        check_batch(blob, BATCH_BYTES_MAX)
