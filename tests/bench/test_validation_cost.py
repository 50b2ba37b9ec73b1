# The validation-cost benchmark compares what it says it compares: its light broker takes a batch whose records
# section is not records (CRC forged to match) and the full one refuses it; one short run reports both variants
# (a smoke test, not a measurement).
from __future__ import annotations

import struct

import trio
from crc32c import crc32c

from millpond.bench import validation_cost
from millpond.broker.wire.batch import CRC_START, encode_batch
from millpond.client import connect
from millpond.client.errors import MillpondError


def not_records() -> bytes:
    """A batch whose header and CRC are right but whose records section is garbage of the same length."""
    blob = bytearray(encode_batch([(1_700_000_000_000, None, b"v" * 20, None)]))
    blob[61:] = b"\xff" * (len(blob) - 61)
    struct.pack_into(">I", blob, 17, crc32c(memoryview(blob)[CRC_START:]))
    return bytes(blob)


async def _produce_raw(port: int) -> str:
    async with connect(f"127.0.0.1:{port}") as c:
        await c.create_topic("t")
        try:
            await c.request("produce", {"topic": "t", "partition": 0, "batch": not_records()})
        except MillpondError as exc:
            return exc.name
        return "stored"


def test_the_light_broker_skips_the_record_pass_and_the_full_one_does_not():
    full = validation_cost._Broker(validation_cost._FULL, "never")
    light = validation_cost._Broker(validation_cost._HEADER_CRC_ONLY, "never")
    try:
        assert trio.run(_produce_raw, full.port) == "CORRUPT_BATCH"
        assert trio.run(_produce_raw, light.port) == "stored"
    finally:
        full.close()
        light.close()


def test_one_short_run_reports_both_variants():
    [row] = validation_cost.measure([100], ["never"], 1, 0.2)
    assert (row["fsync"], row["record_bytes"]) == ("never", 100)
    for variant in validation_cost.VARIANTS:
        assert row[variant]["records_per_s"] > 0
        assert row[variant]["broker_cpu_us_per_record"] >= 0
        assert len(row[variant]["records_per_s_runs"]) == 1
    assert row["throughput_ratio"] == row["full check"]["records_per_s"] / row["header+CRC only"]["records_per_s"]
