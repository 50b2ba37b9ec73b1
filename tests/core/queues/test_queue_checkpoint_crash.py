# A crash at every point of writing a checkpoint of the queues' journal, on file storage: the journal's topic is
# cut at every batch boundary (and inside every batch: a torn tail) from the moment the previous checkpoint
# replaced the older segments, through the next checkpoint being written among other requests' events and past
# its end; each cut replays to the state the events before it give (a journal that never checkpoints, cut after
# the same events). A damaged range inside a checkpoint loses only the messages stored there.
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import msgpack

from millpond.broker.config import TopicDefaults
from millpond.broker.core.log import LogManager
from millpond.broker.core.log.internal import BEGIN, CHECKPOINT_HEADER, END, STATE, stored_records
from millpond.broker.core.queues import QueueAttributes
from millpond.broker.core.queues.journal import QUEUES_TOPIC
from millpond.broker.wire.batch import decode_records, iter_batches

from checkpointkit import Journaled, dump, log_manager
from queuekit import ms


def cut(data_dir: Path, end: int, tear: bool = False) -> None:
    """Make the queues' topic end at offset ``end`` as a crash would: later segments gone, the one holding
    ``end`` cut at its batch starting there (``tear``: a few bytes of that batch left, a torn tail)."""
    directory = data_dir / "topics" / QUEUES_TOPIC / "0"
    for seg in sorted(directory.glob("*.log")):
        base = int(seg.stem)
        raw = seg.read_bytes()
        if base >= end and base != int(sorted(directory.glob("*.log"))[0].stem):
            for side in directory.glob(seg.stem + ".*"):
                side.unlink()
            continue
        for pos, h in iter_batches(raw):
            if h.base_offset >= end:
                seg.write_bytes(raw[:pos + (11 if tear else 0)])
                for side in directory.glob(seg.stem + ".*index"):
                    side.unlink()
                break


def replay_copy(src: Path, dst: Path, end: int, now: float, tear: bool = False) -> dict:
    shutil.copytree(src, dst)
    (dst / ".lock").unlink(missing_ok=True)
    cut(dst, end, tear)
    j = Journaled({"bytes_min": 1 << 60}, log=log_manager(dst), full=log_manager(dst.with_suffix(".unused")))
    state = dump(j.m, now)
    j.log.close()
    j.full.close()
    return state


def test_a_crash_anywhere_in_a_checkpoint_replays_the_events_before_it(tmp_path):
    j = Journaled({"bytes_min": 1500, "factor": 1, "step_bytes": 300}, log=log_manager(tmp_path / "a"),
                  full=log_manager(tmp_path / "b"))
    j.journal._rows = 3
    m, now = j.m, 0.0
    m.create("dlq.fifo", QueueAttributes(fifo=True, content_based_deduplication=True), now, ms(now))
    m.create("q.fifo", QueueAttributes(fifo=True, content_based_deduplication=True, dead_letter_queue="dlq.fifo",
                                       max_receive_count=2), now, ms(now))
    j.write(now)
    points: list[tuple[int, int, int]] = []  # (journal end after the events, after the checkpoint step, reference)
    handles: list[str] = []
    for i in range(1000):
        now = i * 0.5
        if i % 4 == 3 and handles:
            m.delete_message("q.fifo", handles.pop(0), now)
        elif i % 4 == 2:
            handles += [d.receipt_handle for d in m.receive("q.fifo", 2, now, ms(now), visibility_timeout_s=7.0)]
        else:
            m.send("q.fifo", b"body %d" % (i % 50), now, ms(now), group_id="g%d" % (i % 3))
        m.tick(now)
        events = m.take_events()
        a = j.journal.append(events, now, ms(now))
        b = j.reference.append(events, now, ms(now))
        points.append((a, j.plog.log_end_offset, b))
        if j.journal.checkpoints.written == 4:
            break  # the segments before its begin marker are still there: a crash may come anywhere in it
    cps = j.journal.checkpoints
    assert cps.written == 4 and cps.deleted >= 2 and j.plog.log_start_offset > 0
    # a crash never cuts below the end marker of the checkpoint whose durable end deleted what came before it
    marks = [(r.offset, r.headers[CHECKPOINT_HEADER]) for r in stored_records(j.plog, logging.getLogger("test"))
             if r.headers and CHECKPOINT_HEADER in r.headers]
    kept_from = next(offset + 1 for offset, mark in marks if mark == END)
    assert [mark for offset, mark in marks if offset > kept_from and mark != STATE] == [BEGIN, END]
    j.log.close()
    j.full.close()
    checked = 0
    for n, (a, after, b) in enumerate(points):
        if a < kept_from:
            continue
        # cut after the request's events, after its checkpoint step, and inside the batch after its events
        for k, (end, tear) in enumerate({(a, False), (after, False), (a, True)}):
            got = replay_copy(tmp_path / "a", tmp_path / f"a{n}.{k}", end, now, tear)
            want = replay_copy(tmp_path / "b", tmp_path / f"b{n}.{k}", b, now)
            assert got == want, (n, end, tear)
            checked += 1
    assert checked >= 40


def test_a_damaged_range_inside_a_checkpoint_loses_only_what_it_held(tmp_path, caplog):
    j = Journaled({"bytes_min": 2000, "factor": 1, "step_bytes": 200}, log=log_manager(tmp_path / "a"))
    j.journal._rows = 2
    m = j.m
    m.create("q", QueueAttributes(), 0.0, ms(0.0))
    for i in range(60):
        m.send("q", b"message %03d" % i, 0.0, ms(0.0))
        j.write(0.0)
    assert j.journal.checkpoints.deleted and j.plog.log_start_offset > 0
    live = set(j.m.queues["q"].messages)
    j.log.close()
    directory = tmp_path / "a" / "topics" / QUEUES_TOPIC / "0"
    seg = sorted(directory.glob("*.log"))[0]
    raw = bytearray(seg.read_bytes())
    states = [(pos, h) for pos, h in iter_batches(bytes(raw))
              if any(r.headers and r.headers.get(CHECKPOINT_HEADER) == STATE
                     for r in decode_records(bytes(raw[pos:pos + h.size]), QUEUES_TOPIC, 0))]
    pos, h = states[1]
    lost = {row for r in decode_records(bytes(raw[pos:pos + h.size]), QUEUES_TOPIC, 0) for row in _seqs(r.value)}
    raw[pos + h.size - 2] ^= 0x20
    seg.write_bytes(bytes(raw))
    with caplog.at_level(logging.ERROR):
        again = Journaled({"bytes_min": 2000}, log=log_manager(tmp_path / "a"))
    assert lost and set(again.m.queues["q"].messages) == live - lost
    assert f"replay of {QUEUES_TOPIC} skipped a damaged range" in caplog.text


def _seqs(value: bytes) -> list[int]:
    fields = msgpack.unpackb(value, raw=False)
    return [row[0] for row in fields[3]] if fields[0] == "messages" else []


def test_segments_go_only_once_the_end_marker_is_durable(tmp_path):
    """fsync "always": a checkpoint's end marker written but not yet synced deletes nothing (a crash could still
    lose it); after the sync, the next append deletes the segments before its begin marker."""
    log = LogManager(tmp_path, defaults=TopicDefaults(), batch_bytes_max=1 << 20, partitions_max=8,
                     fsync_mode="always")
    log.open(ms(0.0))
    j = Journaled({"bytes_min": 1000, "factor": 1, "step_bytes": 1 << 20}, log=log)
    j.m.create("q", QueueAttributes(), 0.0, ms(0.0))
    written = 0
    while not written:
        j.m.send("q", b"x" * 100, 0.0, ms(0.0))
        j.write(0.0)
        written = j.journal.checkpoints.written
    plog = j.plog
    assert plog.log_start_offset == 0 and plog.high_watermark < plog.log_end_offset
    j.write(0.0)
    assert plog.log_start_offset == 0 and j.journal.checkpoints.deleted == 0
    plan = log.sync_plan()
    log.synced(plan, plan.run())
    j.write(0.0)
    assert plog.log_start_offset > 0 and j.journal.checkpoints.deleted >= 1
    log.run_jobs()
    log.close()
    again = Journaled({"bytes_min": 1000}, log=log_manager(tmp_path))
    assert dump(again.m, 0.0) == dump(j.m, 0.0)
