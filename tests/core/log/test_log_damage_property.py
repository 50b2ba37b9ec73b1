# Recovery and reads under any damage (the corrupted-segment matrix generalised, hypothesis): up to three faults at
# random places of a partition's segment files (a flipped byte anywhere, a file cut anywhere, garbage appended,
# index files removed or flipped, a closed segment's files removed), after a clean stop or a crash. Whatever the faults: the broker opens, every record whose
# batch no fault touched is served at its offset with its value, nothing else is served, a consumer that continues
# past damage reaches the log end, a second start agrees with the first, and no offset is given out again (the
# next produce gets the old log end, unless a fault touched the active segment's last batch so that it reads as a
# torn write: then no earlier than one past the last record served).
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logkit import T0, LogEnv, append, flush
from test_log_damage import OPTS, batches, read_all

SEGMENTS = 4


def value(offset: int) -> bytes:
    return b"v%04d-" % offset + b"*" * (offset % 7 * 5)


@pytest.fixture(scope="module", params=["clean", "crash"])
def template(request, tmp_path_factory):
    """A data directory of SEGMENTS segments of batches of 1-3 records (all synced), and its layout:
    per segment file, (position, size, base offset, record count) of each batch."""
    env = LogEnv(tmp_path_factory.mktemp(request.param) / "data")
    manager = env.open(**OPTS)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    n = 0
    while log.segment_count < SEGMENTS or len(batches(env.segment_files("t")[-1])) < 4:
        o = log.log_end_offset
        append(log, [value(o + i) for i in range(n % 3 + 1)])
        n += 1
    flush(manager)
    end = log.log_end_offset
    if request.param == "clean":
        manager.close()
    else:
        env.crash(manager)
    layout = []
    for f in env.segment_files("t"):
        rows = batches(f)
        counts = [(rows[i + 1][2] if i + 1 < len(rows) else None) for i in range(len(rows))]
        layout.append((f.name, [(pos, size, base, nxt) for (pos, size, base), nxt in zip(rows, counts)]))
    yield env.data_dir, layout, end
    env.close_all()


FAULT = st.tuples(st.sampled_from(["flip", "cut", "garbage", "drop-index", "flip-index", "remove"]),
                  st.integers(0, SEGMENTS - 1),
                  st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=80))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(faults=st.lists(FAULT, min_size=1, max_size=3))
def test_any_damage_loses_only_the_batches_it_touched(template, faults):
    data_dir, layout, end = template
    logging.disable(logging.ERROR)  # the damage reports are tested in test_log_damage.py
    work = Path(tempfile.mkdtemp())
    try:
        shutil.copytree(data_dir, work / "data")
        env = LogEnv(work / "data")
        pdir = env.partition_dir("t")
        touched: set[int] = set()  # base offsets of batches a fault touched
        last_active = layout[-1][1][-1][2]
        for kind, seg, where, junk in faults:
            name, rows = layout[seg]
            path = pdir / name
            if not path.exists():
                continue  # removed by an earlier fault
            size = path.stat().st_size
            if kind == "drop-index":
                for side in pdir.glob(Path(name).stem + ".*index"):
                    side.unlink()
            elif kind == "flip-index":
                for side in pdir.glob(Path(name).stem + ".*index"):
                    raw = bytearray(side.read_bytes())
                    if raw:
                        raw[int(where * len(raw))] ^= junk[0] or 1
                        side.write_bytes(bytes(raw))
            elif kind == "remove" and seg < SEGMENTS - 1:  # a closed segment's files (the active one's: see above)
                for side in pdir.glob(Path(name).stem + ".*"):
                    side.unlink()
                touched |= {base for _, _, base, _ in rows}
            elif kind == "garbage":
                with open(path, "ab") as f:
                    f.write(junk)
            elif kind == "flip" and size:
                at = int(where * size)
                raw = bytearray(path.read_bytes())
                raw[at] ^= junk[0] or 1
                path.write_bytes(bytes(raw))
                touched |= {base for pos, n, base, _ in rows if pos <= at < pos + n}
            elif kind == "cut":
                at = int(where * size)
                os.truncate(path, at)
                touched |= {base for pos, n, base, _ in rows if pos + n > at}
        all_batches = [(base, n, nxt) for _, rows in layout for _, n, base, nxt in rows]
        bounds = {base: (nxt if nxt is not None else None) for base, _, nxt in all_batches}
        kept = set()
        bases = sorted(bounds)
        for k, base in enumerate(bases):
            stop = bases[k + 1] if k + 1 < len(bases) else end
            if base not in touched:
                kept |= set(range(base, stop))
        results = []
        for _ in range(2):  # a second start agrees with the first
            manager = env.open(**OPTS)
            log = manager.partition("t", 0)
            served, _, _ = read_all(log)
            results.append((log.log_end_offset, served))
            flush(manager)
            manager.close()
        assert results[0] == results[1]
        log_end, served = results[0]
        got = dict(served)
        assert len(got) == len(served)  # no offset served twice
        assert all(got[o] == value(o) for o in got)  # nothing served wrong
        assert kept <= set(got)  # nothing lost beyond the batches the faults touched
        manager = env.open(**OPTS)
        nxt = append(manager.partition("t", 0), [b"after"])
        if last_active not in touched:
            assert log_end == end and nxt == end
        else:
            assert nxt >= max(got, default=-1) + 1
        manager.close()
        env.close_all()
    finally:
        logging.disable(logging.NOTSET)
        shutil.rmtree(work)
