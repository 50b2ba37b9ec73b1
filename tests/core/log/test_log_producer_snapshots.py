# Producer state survives rolls and restarts (issue 10 finding 4): every retry of any of a producer's last five
# batches is answered with its first offset, with no roll, a roll per batch, after a clean restart, after a crash,
# after both, with the newest snapshot torn, with no snapshot at all (the whole log replayed), and across retention;
# a snapshot beyond the log end (its batches cut with a torn tail) is removed, never trusted. Literal times, file
# storage unless said.
from __future__ import annotations

import pytest

from millpond.broker.core.log import producer_snapshots
from millpond.broker.core.log.producers import BATCHES_RETAINED, ProducerStates
from millpond.broker.wire.batch import check_batch, encode_batch
from millpond.broker.wire.errors import OutOfOrderSequenceError

from logkit import BATCH_BYTES_MAX, T0, flush, value_at

P, Q = 7, 8  # the producer whose retries are checked, and another one writing in between


def idem(value: bytes, pid: int, seq: int, records: int = 1, epoch: int = 0, ts: int = T0):
    blob = encode_batch([(ts, None, value + b"/%d" % i, None) for i in range(records)], producer_id=pid,
                        producer_epoch=epoch, base_sequence=seq)
    return blob, check_batch(blob, BATCH_BYTES_MAX)


def plain(value: bytes):
    blob = encode_batch([(T0, None, value, None)])
    return blob, check_batch(blob, BATCH_BYTES_MAX)


def write(log, batches: int = 9, pad: int = 0) -> list[tuple[int, int, int, bytes]]:
    """P's ``batches`` batches (1-3 records each, values padded by ``pad`` bytes) with Q's and plain batches
    between: [(seq, records, base, value)]."""
    sent, seq, qseq = [], 0, 0
    for i in range(batches):
        records = 1 + i % 3
        value = b"p%d" % i + b"." * pad
        sent.append((seq, records, log.append(*idem(value, P, seq, records), T0), value))
        seq += records
        log.append(*idem(b"q%d" % i, Q, qseq), T0)
        qseq += 1
        log.append(*plain(b"x%d" % i), T0)
    return sent


def check_retries(log, sent) -> None:
    """Each of P's last five batches is answered with its base and stored once; the one before is out of order;
    the next batch goes on at the log end."""
    end = log.log_end_offset
    for seq, records, base, value in sent[-BATCHES_RETAINED:]:
        assert log.append(*idem(value, P, seq, records), T0) == base
        assert value_at(log, base) == value + b"/0"
    assert log.log_end_offset == end
    seq, records, _, _ = sent[-BATCHES_RETAINED - 1]
    with pytest.raises(OutOfOrderSequenceError):
        log.append(*idem(b"old", P, seq, records), T0)
    last_seq, last_records, _, _ = sent[-1]
    assert log.append(*idem(b"next", P, last_seq + last_records), T0) == end
    assert log.log_end_offset == end + 1


def restart(env, manager, how: str, **defaults):
    if how == "none":
        return manager
    if how == "clean":
        manager.close()
    else:
        flush(manager) if how == "crash" else None  # a crash after the jobs ran (snapshots written)
        env.crash(manager)
    return env.open(**defaults)


SEG = 1024  # the smallest segment_bytes a topic may have


@pytest.mark.parametrize("segment_bytes, pad", [(1 << 20, 0), (SEG, SEG), (SEG, 150)],
                         ids=["no-roll", "roll-each-batch", "roll-some"])
@pytest.mark.parametrize("how", ["none", "clean", "crash", "crash-before-jobs"])
def test_every_one_of_the_last_five_batches_is_recognised(env, segment_bytes, pad, how):
    m = env.open(segment_bytes=segment_bytes)
    m.create_topic("t", 1, None, T0)
    sent = write(m.partition("t", 0), pad=pad)
    segments = m.partition("t", 0).segment_count
    assert segments == 1 if pad == 0 else segments >= (9 if pad == SEG else 3)
    m = restart(env, m, how, segment_bytes=segment_bytes)
    check_retries(m.partition("t", 0), sent)


@pytest.mark.parametrize("damage", ["newest-torn", "newest-garbage", "all-removed", "all-torn"])
def test_a_torn_or_missing_snapshot_falls_back_to_an_older_one_or_the_whole_log(env, damage):
    m = env.open(segment_bytes=SEG)
    m.create_topic("t", 1, None, T0)
    sent = write(m.partition("t", 0), pad=SEG)
    flush(m)
    env.crash(m)
    d = env.partition_dir("t")
    snaps = sorted(d.glob("*.snapshot"))
    assert len(snaps) == producer_snapshots.KEEP
    targets = snaps if damage.startswith("all") else snaps[-1:]
    for path in targets:
        if damage.endswith("removed"):
            path.unlink()
        elif damage.endswith("torn"):
            path.write_bytes(path.read_bytes()[:-3])
        else:
            path.write_bytes(b"\x00" * 40)
    check_retries(env.open(segment_bytes=SEG).partition("t", 0), sent)


def test_restarts_again_and_again_with_more_batches_between(env):
    m = env.open(segment_bytes=SEG)
    m.create_topic("t", 1, None, T0)
    log = m.partition("t", 0)
    sent = write(log, 3, pad=300)
    for round_ in range(4):
        m = restart(env, m, ("clean", "crash", "crash-before-jobs", "clean")[round_], segment_bytes=SEG)
        log = m.partition("t", 0)
        seq = sent[-1][0] + sent[-1][1]
        for i in range(2):
            value = b"p%d" % len(sent) + b"." * 300
            sent.append((seq, 2, log.append(*idem(value, P, seq, 2), T0), value))
            seq += 2
    m = restart(env, m, "crash", segment_bytes=SEG)
    log = m.partition("t", 0)
    assert log.segment_count >= 5
    end = log.log_end_offset
    for seq, records, base, _ in sent[-BATCHES_RETAINED:]:
        assert log.append(*idem(b"again", P, seq, records), T0) == base
    assert log.log_end_offset == end


def test_a_snapshot_beyond_the_log_end_is_removed_not_trusted(env):
    m = env.open()
    m.create_topic("t", 1, None, T0)
    log = m.partition("t", 0)
    log.append(*idem(b"a", P, 0), T0)
    m.close()
    # a snapshot taken at a roll whose segment's tail was then cut: it claims P's seq 1 is stored at offset 1
    states = ProducerStates()
    states.record(P, 0, 0, 1, 0)
    states.record(P, 0, 1, 1, 1)
    snaps = producer_snapshots.FileSnapshots(env.partition_dir("t"))
    snaps.save(2, producer_snapshots.encode(2, states.to_plain()))
    log = env.open().partition("t", 0)
    assert snaps.offsets() == []
    assert log.append(*idem(b"b", P, 1), T0) == 1  # appended, not answered with an offset that was never acked
    assert log.log_end_offset == 2 and value_at(log, 1) == b"b/0"


def test_retention_forgets_producers_whose_batches_are_gone_and_keeps_the_others(env):
    m = env.open(segment_bytes=SEG, retention_s=1)
    m.create_topic("t", 1, None, T0)
    log = m.partition("t", 0)
    log.append(*idem(b"q" * SEG, Q, 0, ts=T0 - 10_000), T0)  # Q writes once, long ago, alone in the first segment
    sent = write(log, 9, pad=SEG)
    flush(m)
    assert log.enforce_retention(T0 + 500) == 1 and log.log_start_offset == 1
    m.close()
    log = env.open(segment_bytes=SEG, retention_s=1).partition("t", 0)
    assert log.log_start_offset == 1
    check_retries(log, sent)
    log.append(*idem(b"q", Q, 5), T0)  # Q is forgotten: any sequence is taken, as Kafka's for an unknown producer


def test_every_store_keeps_state_across_rolls(anyenv):
    m = anyenv.open(segment_bytes=SEG)
    m.create_topic("t", 1, None, T0)
    log = m.partition("t", 0)
    sent = write(log, pad=SEG)
    assert log.segment_count >= 9
    check_retries(log, sent)


def test_plain_state_round_trips_and_a_bad_one_is_refused():
    states = ProducerStates()
    for pid in range(3):
        for seq in range(7):
            states.record(pid, 1, seq * 2, 2, 100 * pid + seq * 2)
    again = ProducerStates()
    again.restore(states.to_plain())
    assert again.to_plain() == states.to_plain() and len(again) == 3
    assert again.check(1, 1, 12, 2) == 112 and again.check(1, 1, 14, 1) is None
    for bad in ({}, [[1, 0]], [[1, 0, [1, 2, 3]]], [[1, 0, [1, 2, 3, "x"]]], [[1, 0, list(range(24))]], [None]):
        with pytest.raises(ValueError, match="not a producer state snapshot"):
            again.restore(bad)
        assert len(again) == 0
