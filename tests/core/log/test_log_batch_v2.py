# The log over Kafka's record batch v2: the base offset and partition leader epoch written in place (the rest of
# the stored bytes are the producer's, compressed or not), producer fields read from the header, ListOffsets over a
# compressed batch, and a data directory in the old pre-release format refused with a message naming the problem.
from __future__ import annotations

import pytest
from msgpack import packb

from millpond.broker.core.log.batch_format import V2
from millpond.broker.core.log.files import seal, write_file
from millpond.broker.wire.batch import check_batch, encode_batch, stamp
from millpond.broker.wire.errors import StorageError
from logkit import BATCH_BYTES_MAX, T0, append, flush


def test_the_stored_bytes_are_the_sent_ones_with_offset_and_epoch_stamped(anyenv):
    manager = anyenv.open()
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    append(log, [b"a", b"b", b"c"])
    blob = encode_batch([(T0 + i, None, b"v" * 50, {"h": b"x"}) for i in range(4)], compression="gzip")
    blob = b"\x00" * 8 + blob[8:12] + b"\xff\xff\xff\xff" + blob[16:]  # a producer's leader epoch -1 (aiokafka's)
    assert log.append(blob, check_batch(blob, BATCH_BYTES_MAX), T0) == 3
    stored = bytes(log.read(3, 1 << 20))
    assert stored == stamp(3, len(blob) - 12) + blob[17:]
    assert stored[:17].hex() == "0000000000000003" + (len(blob) - 12).to_bytes(4, "big").hex() + "00000000" + "02"


def test_producer_fields_come_from_the_header_after_a_restart(env):
    manager = env.open()
    manager.create_topic("t", 1, None, T0)
    blob = encode_batch([(T0, None, b"x", None)] * 2, producer_id=9, producer_epoch=0, base_sequence=0)
    manager.partition("t", 0).append(blob, check_batch(blob, BATCH_BYTES_MAX), T0)
    flush(manager)
    log = env.open().partition("t", 0)
    again = log.append(blob, check_batch(blob, BATCH_BYTES_MAX), T0)  # a retry after the restart: not re-appended
    assert (again, log.log_end_offset) == (0, 2)
    assert V2.producer(V2.unpack(bytes(log.read(0, 1 << 20)), 0)) == (9, 0, 0, 2)


def test_list_offsets_by_time_reads_a_compressed_batch(anyenv):
    manager = anyenv.open()
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    blob = encode_batch([(T0 + 10 * i, None, b"v%d" % i, None) for i in range(5)], compression="gzip")
    log.append(blob, check_batch(blob, BATCH_BYTES_MAX), T0)
    assert log.offset_for_timestamp(T0 + 25) == (3, T0 + 30)


def test_an_old_format_data_directory_is_refused_naming_the_problem(env):
    manager = env.open()
    manager.create_topic("fresh", 1, None, T0)
    env.crash(manager)
    old = env.data_dir / "topics" / "orders"
    (old / "0").mkdir(parents=True)
    write_file(old / "topic.meta", seal(packb({"format": 1, "name": "orders", "partitions": 1, "config": {}})), fsync=False)
    with pytest.raises(StorageError) as info:
        env.open()
    assert info.value.message == (
        f"data directory {env.data_dir} holds topics (orders) stored in millpond's pre-release batch format (a "
        "56-byte header, CRC-32, msgpack records), which this broker does not read: it stores Kafka's record batch "
        "v2. No released millpond wrote that format; move the directory aside or delete it, then start again")
