# What millpond uses of its batch-codec dependencies, pinned: aiokafka's compiled record module (the builder's
# signature and output, the reader's iteration and errors, the codec probes) and crc32c. An upgrade that changes any
# of it fails here before it fails anywhere else (broker/wire/batch.py is the one module that imports them).
from __future__ import annotations

import inspect
from importlib.metadata import version

import aiokafka.codec
import pytest
from aiokafka.record._crecords import default_records as compiled
from crc32c import crc32c


def test_pinned_versions():
    assert version("aiokafka").startswith("0.14.")
    assert int(version("crc32c").split(".")[0]) == 2


def test_the_compiled_module_is_the_one_imported():
    # a pure-Python fallback would be an order of magnitude slower on the produce and fetch paths
    assert compiled.__file__.endswith(".so")
    assert not inspect.isfunction(compiled.DefaultRecordBatchBuilder.append)


def test_builder_output_and_its_leader_epoch():
    b = compiled.DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    b.append(0, 1_700_000_000_000, b"key", b"value", [("h", b"v")])
    b.append(1, 1_700_000_000_005, None, b"v2", [])
    out = b.build()
    assert isinstance(out, bytearray) and len(out) == 89
    assert out[12:16] == b"\xff\xff\xff\xff"  # aiokafka writes partition leader epoch -1; millpond stamps 0
    assert out[16] == 2 and int.from_bytes(out[17:21], "big") == 0x3F06057B == crc32c(bytes(out[21:]))


def test_builder_wants_a_list_of_headers():
    b = compiled.DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    with pytest.raises(TypeError, match="expected list"):
        b.append(0, 1, None, b"v", ())


def test_reader_iterates_records_and_refuses_trailing_bytes():
    b = compiled.DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 20)
    b.append(0, 10, b"k", b"v", [("a", b"b")])
    out = bytes(b.build())
    r = next(iter(compiled.DefaultRecordBatch(out)))
    assert (r.offset, r.timestamp, r.key, r.value, r.headers) == (0, 10, b"k", b"v", [("a", b"b")])
    with pytest.raises(Exception, match="4 unconsumed bytes"):
        list(compiled.DefaultRecordBatch(out + b"xxxx"))


def test_codec_probes():
    assert aiokafka.codec.has_gzip() is True
    for probe in (aiokafka.codec.has_snappy, aiokafka.codec.has_lz4, aiokafka.codec.has_zstd):
        assert probe() in (True, False)
