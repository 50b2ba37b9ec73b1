# Fan-out in the daemon process under kill -9 (fsync "always", the daemon's default): records are produced,
# pipelined, into a topic with two queue subscriptions (one filtered) while the broker fans them out; SIGKILL three
# times mid-flight, restart; after the last restart each queue holds every record of the log it should, exactly
# once.
from __future__ import annotations

import json
import random
import signal
import threading
import time

import pytest

from millpond.broker.wire.batch import decode_records, encode_batch

pytestmark = pytest.mark.slow

BATCH = 50


def _log(c, topic: str, partitions: int) -> list:
    records = []
    for p in range(partitions):
        offset = 0
        while True:
            got = c.ok("fetch", {"partitions": [[topic, p, offset]], "max_bytes": 1 << 20, "max_wait_ms": 0})
            _, _, code, _, hw, data = got["partitions"][0]
            assert code == 0
            if offset >= hw:
                break
            batch = [r for r in decode_records(data, topic, p, offset) if r.offset < hw]
            records += batch
            offset = batch[-1].offset + 1
    return records


def _drain(c, queue: str) -> list[bytes]:
    bodies = []
    while True:
        got = c.ok("receive_messages", {"queue": queue, "max_messages": 1000, "visibility_timeout_ms": 3_600_000})
        if not got["messages"]:
            return bodies
        bodies += [m["body"] for m in got["messages"]]


def test_kill_9_during_fanout_loses_and_duplicates_nothing(daemon, tmp_path):
    rng = random.Random(12)
    data_dir = tmp_path / "data"
    acked = 0
    subs = []
    for round_, target in enumerate((3_000, 6_500, 10_000)):
        d = daemon(data_dir=data_dir)
        c = d.client()
        if round_ == 0:
            c.ok("create_topic", {"name": "t", "partitions": 2})
            for q in ("all", "low"):
                c.ok("create_queue", {"name": q})
            subs.append(c.ok("subscribe", {"topic": "t", "queue": "all", "raw": True})["id"])
            subs.append(c.ok("subscribe", {"topic": "t", "queue": "low", "raw": True,
                                           "filter_policy": json.dumps({"n": [{"numeric": ["<", 3]}]})})["id"])
        stop, reached = threading.Event(), threading.Event()
        kill_at = target + rng.randint(0, 500)

        def produce(round_: int = round_) -> None:
            nonlocal acked
            i = 0
            try:
                while not stop.is_set():
                    cids = []
                    for _ in range(4):  # pipelined produces
                        rows = [(1_700_000_000_000, None, b"r%d-%d" % (round_, i + k), [("n", b"%d" % ((i + k) % 10))])
                                for k in range(BATCH)]
                        cids.append(c.send("produce", {"topic": "t", "partition": (i // BATCH) % 2,
                                                       "batch": encode_batch(rows)}))
                        i += BATCH
                    for _ in cids:
                        _, code, _ = c.receive()
                        assert code == 0
                        acked += BATCH
                    if acked >= kill_at:
                        reached.set()
            except (ConnectionError, OSError):
                return

        t = threading.Thread(target=produce)
        t.start()
        assert reached.wait(60), f"round {round_}: only {acked} records acknowledged, want {kill_at}"
        d.stop(signal.SIGKILL)  # produces in flight, fan-out behind them
        stop.set()
        t.join(10)
        c.close()

    d = daemon(data_dir=data_dir)
    c = d.client()
    deadline = time.monotonic() + 60
    while True:  # the fan-out catches up after the restart
        lags = [c.ok("describe_subscription", {"id": s})["lag"] for s in subs]
        if lags == [0, 0] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert lags == [0, 0]
    records = _log(c, "t", 2)
    assert len(records) >= acked >= 10_000
    everything = _drain(c, "all")
    low = _drain(c, "low")
    assert len(everything) == len(set(everything)) and len(low) == len(set(low))  # nothing twice
    assert sorted(everything) == sorted(r.value for r in records)  # nothing lost
    assert sorted(low) == sorted(r.value for r in records if int(r.headers["n"]) < 3)
    d_all, d_low = (c.ok("describe_subscription", {"id": s}) for s in subs)
    assert (d_all["delivered"], d_low["delivered"] + d_low["filtered_out"]) == (len(records), len(records))
