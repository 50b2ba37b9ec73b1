# Queues in the daemon process under kill -9: while sends, receives and deletes are pipelined, SIGKILL at a random
# point, three times; after the last restart every acknowledged send that was not deleted is there, and no
# acknowledged delete came back.
from __future__ import annotations

import random
import signal
import threading

import pytest

pytestmark = pytest.mark.slow


def test_kill_9_during_sends_and_deletes_loses_no_acknowledged_send_and_resurrects_no_delete(daemon, tmp_path):
    rng = random.Random(11)
    data_dir = tmp_path / "data"
    sent: set[bytes] = set()  # acknowledged sends
    deleted: set[bytes] = set()  # acknowledged deletes
    for round_ in range(3):
        d = daemon(data_dir=data_dir)
        c = d.client()
        if round_ == 0:
            c.ok("create_queue", {"name": "q", "visibility_timeout_ms": 0})  # every receive sees every message
        stop, reached = threading.Event(), threading.Event()
        kill_after = len(sent) + rng.randint(200, 600)  # a count of acknowledged sends, reproducible

        def pump() -> None:
            i = 0
            try:
                while not stop.is_set():
                    bodies = {}
                    for _ in range(8):  # pipelined sends
                        body = b"r%d-%d" % (round_, i)
                        i += 1
                        bodies[c.send("send_message", {"queue": "q", "body": body})] = body
                    for _ in range(8):
                        cid, code, _ = c.receive()
                        assert code == 0
                        sent.add(bodies.pop(cid))
                    if len(sent) >= kill_after:
                        reached.set()
                    code, got = c.call("receive_messages", {"queue": "q", "max_messages": 10})
                    assert code == 0
                    handles = {}
                    for m in got["messages"][:5]:  # pipelined deletes of half of what came
                        handles[c.send("delete_message", {"queue": "q", "receipt_handle": m["receipt_handle"]})] = \
                            m["body"]
                    for _ in range(len(handles)):
                        cid, code, _ = c.receive()
                        assert code == 0
                        deleted.add(handles.pop(cid))
            except (ConnectionError, OSError):
                return

        t = threading.Thread(target=pump)
        t.start()
        assert reached.wait(30), f"round {round_}: only {len(sent)} sends acknowledged, want {kill_after}"
        d.stop(signal.SIGKILL)  # with sends and deletes still in flight
        stop.set()
        t.join(10)
        c.close()

    d = daemon(data_dir=data_dir)
    c = d.client()
    stored: list[bytes] = []
    while True:  # drain: each receive hides what it gave for an hour
        got = c.ok("receive_messages", {"queue": "q", "max_messages": 1000, "visibility_timeout_ms": 3_600_000})
        if not got["messages"]:
            break
        stored += [m["body"] for m in got["messages"]]
    assert len(stored) == len(set(stored))
    assert len(sent) > 600 and len(deleted) > 0
    assert sorted(sent - deleted - set(stored)) == []  # no acknowledged send lost
    assert sorted(deleted & set(stored)) == []  # no acknowledged delete came back
