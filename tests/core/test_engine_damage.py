# A fetch over damaged storage, at the engine: the damaged partition's row carries the intact batches before the
# damage and CORRUPT_RANGE with its details, the other partitions of the same fetch are answered as usual, and an
# answer with no room left for the details returns the intact batches alone (the next fetch gets the error).
from __future__ import annotations

from millpond.broker.core.log.api import CreateTopic, Fetch, FetchPartition, Produce
from millpond.broker.wire.batch import decode_records, encode_batch, iter_batches
from millpond.broker.wire.errors import CorruptRangeError
from enginekit import T0_MS, answer, make_engine


def produce_all(engine, partition: int, batches: int) -> None:
    for b in range(batches):
        answer(engine, Produce("t", partition, encode_batch([(T0_MS, None, b"p%d-%d-%d" % (partition, b, i), None)
                                                             for i in range(4)])))


def damaged_engine(tmp_path):
    engine = make_engine(tmp_path, fsync="never")
    answer(engine, CreateTopic("t", 2))
    produce_all(engine, 0, 6)
    produce_all(engine, 1, 6)
    engine.close()
    [segment] = sorted((tmp_path / "topics" / "t" / "0").glob("*.log"))
    raw = bytearray(segment.read_bytes())
    pos, h = list(iter_batches(bytes(raw)))[3]  # offsets 12-15
    raw[pos + h.size - 2] ^= 0x10
    segment.write_bytes(bytes(raw))
    return make_engine(tmp_path, fsync="never"), pos


def test_the_damaged_partition_reports_and_the_others_are_served(tmp_path):
    engine, _ = damaged_engine(tmp_path)
    rows = answer(engine, Fetch((FetchPartition("t", 0, 0), FetchPartition("t", 1, 0)), 1 << 20)).partitions
    damaged, other = rows
    assert damaged.code == CorruptRangeError.code
    assert [r.offset for r in decode_records(damaged.data, "t", 0)] == list(range(12))
    assert {k: damaged.corrupt[k] for k in ("first_offset", "last_offset", "next_offset")} == {
        "first_offset": 12, "last_offset": 15, "next_offset": 16}
    assert other.code == 0 and other.corrupt is None
    assert [r.value for r in decode_records(other.data, "t", 1)] == [b"p1-%d-%d" % (b, i) for b in range(6)
                                                                     for i in range(4)]
    again = answer(engine, Fetch((FetchPartition("t", 0, 16),), 1 << 20)).partitions[0]
    assert again.code == 0 and [r.offset for r in decode_records(again.data, "t", 0)] == list(range(16, 24))
    engine.close()


def test_no_room_for_the_details_returns_the_intact_batches_alone(tmp_path):
    engine, pos = damaged_engine(tmp_path)
    row = answer(engine, Fetch((FetchPartition("t", 0, 0),), pos + 100)).partitions[0]
    assert row.code == 0 and row.corrupt is None and len(row.data) == pos
    nxt = answer(engine, Fetch((FetchPartition("t", 0, 12),), pos + 100)).partitions[0]
    assert nxt.code == CorruptRangeError.code and nxt.data == b"" and nxt.corrupt["next_offset"] == 16
    engine.close()
