# Kafka's record batch v2 end to end: batches built by independent Kafka builders (kafka-python's and aiokafka's,
# compressed and not) accepted by the broker as sent and read back by millpond's consumer; the producer compressing;
# a codec that is not installed refused with an error naming the extra.
from __future__ import annotations

import warnings

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder as AiokafkaBuilder

from millpond.broker.wire import batch as wire_batch
from millpond.broker.wire.batch import iter_batches
from millpond.client.errors import UnsupportedCompressionTypeError

from clientkit import drain

with warnings.catch_warnings():  # kafka-python 3.0's package import uses importlib.resources.read_text
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.record.default_records import DefaultRecordBatchBuilder as KafkaPythonBuilder

T0 = 1_700_000_000_000
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def built_by(builder, codec: int, pid: int, start: int) -> bytes:
    b = builder(2, codec, 0, pid, 0 if pid >= 0 else -1, start if pid >= 0 else -1, 1 << 20)
    for i in range(start, start + 20):
        b.append(i - start, T0 + i, b"k%d" % i, b"value %d " % i * 10, [("n", b"%d" % i)])
    return bytes(b.build())


@pytest.mark.parametrize("codec", list(CODECS))
async def test_kafka_builders_batches_are_stored_as_sent_and_consumed(client, codec):
    await client.create_topic("t")
    sent = [built_by(KafkaPythonBuilder, CODECS[codec], -1, 0), built_by(AiokafkaBuilder, CODECS[codec], 7, 20)]
    for blob in sent:
        await client.request("produce", {"topic": "t", "partition": 0, "batch": blob})
    answer = await client.request("fetch", {"partitions": [["t", 0, 0]], "max_wait_ms": 0})
    data = bytes(answer["partitions"][0][5])
    stored = [data[pos:pos + h.size] for pos, h in iter_batches(data)]
    assert [s[17:] for s in stored] == [blob[17:] for blob in sent]  # bytes as sent, only the stamp is the broker's
    async with client.consumer("t", auto_offset_reset="earliest") as cons:
        got = await drain(cons, 40)
    assert [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in got] == [
        (i, T0 + i, b"k%d" % i, b"value %d " % i * 10, {"n": b"%d" % i}) for i in range(40)]


@pytest.mark.parametrize("codec", list(CODECS))
async def test_the_producer_compresses_and_the_consumer_decodes(client, codec):
    await client.create_topic("t")
    async with client.producer(compression=codec) as p:
        for i in range(50):
            p.send("t", b"payload %d " % i * 20, key=b"k", headers={"i": b"%d" % i}, timestamp_ms=T0 + i)
    answer = await client.request("fetch", {"partitions": [["t", 0, 0]], "max_wait_ms": 0})
    data = bytes(answer["partitions"][0][5])
    assert {h.attributes for _, h in iter_batches(data)} == {CODECS[codec]}
    async with client.consumer("t", auto_offset_reset="earliest") as cons:
        got = await drain(cons, 50)
    assert [(r.offset, r.timestamp_ms, r.key, r.value, r.headers) for r in got] == [
        (i, T0 + i, b"k", b"payload %d " % i * 20, {"i": b"%d" % i}) for i in range(50)]


async def test_a_codec_that_is_not_installed_names_the_extra(client, monkeypatch):
    monkeypatch.setitem(wire_batch._AVAILABLE, 4, lambda: False)
    with pytest.raises(UnsupportedCompressionTypeError) as info:
        client.producer(compression="zstd")
    assert info.value.message == "zstd compression needs the 'compression' extra: pip install 'millpond[compression]'"
    with pytest.raises(ValueError, match="compression must be one of none, gzip, snappy, lz4, zstd, got 'zip'"):
        client.producer(compression="zip")
