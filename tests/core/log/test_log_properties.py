# Property (every storage): whatever the sequence of appends, age rolls, retention-free syncs and (file store)
# clean reopens, crashes and torn tails, every offset reads back the batch containing it with the right record
# values, and lookup by timestamp agrees with a plain model.
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from millpond.broker.wire.batch import decode_records, iter_batches
from logkit import STORAGES, T0, LogEnv, append, flush

CONFIG = dict(segment_bytes=1024, index_interval_bytes=150, segment_s=1)

appends = st.tuples(
    st.just("append"),
    st.lists(st.tuples(st.binary(max_size=300), st.integers(-50, 50)), min_size=1, max_size=5),
)
bulk = st.tuples(st.just("bulk"), st.integers(1, 30), st.integers(0, 400))  # many batches: several segments
ops = st.one_of(
    appends,
    appends,
    bulk,
    st.tuples(st.just("tick"), st.integers(0, 1500)),
    st.tuples(st.just("sync")),
    st.tuples(st.just("reopen"), st.booleans()),
    st.tuples(st.just("tear"), st.integers(1, 10_000)),
)


def first_at_or_after(model: list[tuple[bytes, int]], t: int) -> tuple[int, int] | None:
    for offset, (_, ts) in enumerate(model):
        if ts >= t:
            return offset, ts
    return None


@pytest.mark.parametrize("storage", STORAGES)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=st.lists(ops, min_size=1, max_size=25))
def test_random_appends_rolls_and_reopens_keep_every_record(storage, script):
    with tempfile.TemporaryDirectory() as tmp:
        env = LogEnv(Path(tmp) / "data", storage)
        try:
            run(env, script)
        finally:
            env.close_all()


def run(env: LogEnv, script) -> None:
    manager = env.open(**CONFIG)
    manager.create_topic("t", 1, None, T0)
    log = manager.partition("t", 0)
    model: list[tuple[bytes, int]] = []  # (value, timestamp) per offset
    batch_sizes: list[int] = []  # record count of each batch, in order
    now = T0
    for op in script:
        if op[0] == "append":
            values = [v for v, _ in op[1]]
            stamps = [T0 + len(model) + d for _, d in op[1]]
            assert append(log, values, stamps, now_ms=now) == len(model)
            model.extend(zip(values, stamps))
            batch_sizes.append(len(values))
        elif op[0] == "bulk":
            for i in range(op[1]):
                values = [b"%d" % len(model) + b"b" * op[2]] * (1 + i % 3)
                stamps = [T0 + len(model) - 30 + (i * 17 + j * 31) % 60 for j in range(len(values))]
                assert append(log, values, stamps, now_ms=now) == len(model)
                model.extend(zip(values, stamps))
                batch_sizes.append(len(values))
        elif op[0] == "tick":
            now += op[1]
        elif op[0] == "sync":
            flush(manager)
        elif not env.files:
            continue  # memory: nothing survives a restart, so there is nothing to reopen or tear
        elif op[0] == "reopen":
            if op[1]:
                manager.close()
            else:
                env.crash(manager)
            manager = env.open(now_ms=now, **CONFIG)
            log = manager.partition("t", 0)
        else:  # crash and tear the last batch, if it lies in the tail segment
            tail_size = log.store.segments[-1].size
            env.crash(manager)
            if tail_size and batch_sizes:
                tail = env.segment_files("t")[-1]
                last_batch_bytes = list(iter_batches(tail.read_bytes()))[-1][1].size
                os.truncate(tail, tail_size - 1 - (op[1] - 1) % last_batch_bytes)
                del model[len(model) - batch_sizes.pop() :]
            manager = env.open(now_ms=now, **CONFIG)
            log = manager.partition("t", 0)
        assert log.log_end_offset == len(model)
    check(log, model)


def check(log, model: list[tuple[bytes, int]]) -> None:
    assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (0, len(model), len(model))
    everything = decode_records(log.read(0, 1 << 30), "t", 0)
    assert [(r.offset, r.value, r.timestamp_ms) for r in everything] == [(o, v, ts) for o, (v, ts) in enumerate(model)]
    for offset, (value, ts) in enumerate(model):
        records = decode_records(log.read(offset, 1), "t", 0)
        assert records[0].offset <= offset <= records[-1].offset
        assert [(r.value, r.timestamp_ms) for r in records if r.offset == offset] == [(value, ts)]
    stamps = sorted({ts for _, ts in model} | {T0 - 100, T0 + len(model) + 100})
    for t in stamps + [s + 1 for s in stamps]:
        assert log.offset_for_timestamp(t) == first_at_or_after(model, t)
