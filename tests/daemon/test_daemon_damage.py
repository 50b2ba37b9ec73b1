# Damage on disk, end to end: the broker as a process stopped by SIGKILL or SIGTERM, a byte flipped in a segment,
# restarted. The start-up summary names the quarantined range; a raw fetch returns the intact batches before it and
# then CORRUPT_RANGE with the range and the next readable offset; the client raises CorruptRangeError after handing
# out the records before it, or continues with skip_corrupt=True; `millpond consume` prints what is intact and
# exits naming the range, or with --skip-corrupt prints everything else and reports the skip; nothing acknowledged
# is lost beyond the damaged batch and the next produce gets a fresh offset.
from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from millpond.broker.wire.batch import decode_records, encode_batch, iter_batches
from millpond.client.errors import CorruptRangeError
from millpond.client.sync import connect

pytestmark = pytest.mark.slow

PER_BATCH = 10
BATCHES = 40


def value(offset: int) -> bytes:
    return b"rec-%05d" % offset


def flip_batch(segment: Path, which: int) -> tuple[int, int]:
    """Flip a byte inside the records of the segment's batch ``which`` (an index); returns its offsets (first,
    last)."""
    raw = bytearray(segment.read_bytes())
    pos, h = list(iter_batches(bytes(raw)))[which]
    raw[pos + h.size - 3] ^= 0x40
    segment.write_bytes(bytes(raw))
    return h.base_offset, h.base_offset + h.record_count - 1


def mp(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "millpond.broker.cli", *args, "--broker", f"127.0.0.1:{port}"],
                          capture_output=True, timeout=60)


@pytest.mark.parametrize("stop, where, which", [(signal.SIGKILL, "active", 1), (signal.SIGTERM, "active", 1),
                                                (signal.SIGTERM, "closed", 1), (signal.SIGKILL, "active", -1)])
def test_damaged_segment_after_a_stop_is_routed_around(daemon, stop, where, which):
    d = daemon()
    c = d.client()
    c.ok("create_topic", {"name": "t", "partitions": 1, "config": {"segment_bytes": 4096}})
    for b in range(BATCHES):  # each acknowledged (the daemon's default: fsync always)
        base = b * PER_BATCH
        answer = c.ok("produce", {"topic": "t", "partition": 0, "batch": encode_batch(
            [(1_700_000_000_000, None, value(base + i), None) for i in range(PER_BATCH)])})
        assert answer["base_offset"] == base
    end = BATCHES * PER_BATCH
    c.close()
    d.stop(stop)
    segments = sorted((d.data_dir / "topics" / "t" / "0").glob("*.log"))
    assert len(segments) >= 3
    first, last = flip_batch(segments[-1] if where == "active" else segments[0], which)
    expected = [value(o) for o in range(end) if not first <= o <= last]

    d2 = daemon(data_dir=d.data_dir)
    port = d2.port
    c2 = d2.client()
    # the raw protocol: intact batches, then the error row with its details
    answer = c2.ok("fetch", {"partitions": [["t", 0, 0]], "max_bytes": 1 << 20, "max_wait_ms": 0})
    [row] = answer["partitions"]
    assert row[2] == 23 and len(row) == 7
    assert [r.offset for r in decode_records(row[5], "t", 0)] == list(range(first))
    assert {k: row[6][k] for k in ("first_offset", "last_offset", "next_offset")} == {
        "first_offset": first, "last_offset": last, "next_offset": last + 1}
    assert f"offsets {first}-{last} are damaged" in row[6]["message"]
    c2.close()

    with connect(f"127.0.0.1:{port}") as client:
        with client.consumer(auto_offset_reset="earliest") as cons:
            cons.assign([("t", 0)])
            got = []
            with pytest.raises(CorruptRangeError) as info:
                while True:
                    got += [r.value for r in cons.getmany(timeout_s=10)]
            assert got == [value(o) for o in range(first)]  # everything before the damage, then the error
            assert info.value.details["next_offset"] == last + 1 and cons.position("t", 0) == first
            cons.seek("t", 0, info.value.details["next_offset"])
            rest = []
            while len(rest) < end - last - 1:
                rest += [r.value for r in cons.getmany(timeout_s=10)]
            assert rest == expected[first:]
        with client.consumer(auto_offset_reset="earliest", skip_corrupt=True) as cons:
            cons.assign([("t", 0)])
            got = []
            while len(got) < len(expected) or not cons.skipped:
                got += [r.value for r in cons.getmany(timeout_s=10)]
            assert got == expected and cons.skipped == [("t", 0, first, last)]
            assert cons.position("t", 0) == end  # past the skipped range, even when nothing follows it

    r = mp(port, "consume", "t", "--from-beginning", "-e")
    assert r.returncode == 1
    assert r.stdout.split() == [value(o) for o in range(first)]
    summary, error = r.stderr.decode().splitlines()
    assert re.fullmatch(rf"consumed {first} records in [0-9.]+ s", summary)
    assert error == (f"millpond consume: CORRUPT_RANGE: offsets {first}-{last} of t/0 are damaged on disk; the next "
                     f"readable offset is {last + 1} (--skip-corrupt continues past them)")
    r = mp(port, "consume", "t", "--from-beginning", "-e", "--skip-corrupt")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == expected
    skipped, summary = r.stderr.decode().splitlines()
    assert skipped == f"millpond consume: skipped damaged offsets {first}-{last} of t/0"
    assert re.fullmatch(rf"consumed {len(expected)} records in [0-9.]+ s", summary)

    c3 = d2.client()  # the damaged batch's offsets are never given out again
    assert c3.ok("produce", {"topic": "t", "partition": 0, "batch": encode_batch(
        [(1_700_000_000_000, None, b"after", None)])})["base_offset"] == end
    log = d2.stderr()
    [summary] = [line for line in log.splitlines() if "t/0: recovered" in line]
    if stop == signal.SIGKILL:  # the active segment is scanned at start: found there
        assert f"recovered {end - (last - first + 1)} records" in summary
        assert f"1 corrupt ranges quarantined; {first}-{last}" in summary
    else:  # a clean stop's index files are trusted: found by the first read, which checks every CRC it serves
        assert f"recovered {end} records" in summary and "0 corrupt ranges quarantined" in summary
        assert f"offsets {first}-{last} quarantined" in log and "found by a read" in log
