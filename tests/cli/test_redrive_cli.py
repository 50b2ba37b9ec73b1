# `millpond queues redrive` as a user runs it: subprocesses against a broker subprocess (start, status, cancel,
# --to, and the refusals as one line).
from __future__ import annotations

import re
import time

import pytest

from millpond.client.sync import connect

from clikit import mp

pytestmark = pytest.mark.slow


def dead_letters(daemon: str, source: str, n: int) -> None:
    with connect(daemon) as c:
        c.create_queue("dlq")
        c.create_queue(source, visibility_timeout_s=0.0, dead_letter_queue="dlq", max_receive_count=1)
        q = c.queue(source)
        q.send_batch([b"%s-%d" % (source.encode(), i) for i in range(n)])
        assert len(q.receive(10, wait_s=0.0)) == n
        assert q.receive(10, wait_s=0.0) == []  # past max_receive_count: all in the DLQ


def wait_for(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_queues_redrive_starts_shows_and_cancels(daemon):
    b = ["--broker", daemon]
    dead_letters(daemon, "orders", 5)
    r = mp("queues", "redrive", "orders", *b)
    assert r.returncode == 1 and r.stderr.startswith(b"millpond queues: INVALID_PARAMETER_VALUE: queue 'orders' is "
                                                     b"not the dead-letter queue of any queue"), r.stderr
    r = mp("queues", "redrive", "dlq", "--rate", "1000", *b)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rb"started redrive task dlq:[0-9a-f]{16}: 5 message\(s\) from dlq to their source queues at "
                        rb"1000/s \(millpond queues redrive dlq --status to follow\)\n", r.stdout), r.stdout

    def done() -> bool:
        return b"COMPLETED" in mp("queues", "redrive", "dlq", "--status", *b).stdout

    wait_for(done)
    r = mp("queues", "redrive", "dlq", "--status", *b)
    assert re.fullmatch(rb"dlq:[0-9a-f]{16}: COMPLETED 5/5 moved from dlq to each message's source queue at "
                        rb"1000/s\n", r.stdout), r.stdout
    r = mp("receive", "orders", "--max", "10", "--wait-s", "0", *b)
    assert sorted(r.stdout.splitlines()) == [b"orders-%d" % i for i in range(5)]

    with connect(daemon) as c:
        q = c.queue("orders")
        q.send_batch([b"again-%d" % i for i in range(5)])
        assert len(q.receive(10, wait_s=0.0)) == 5 and q.receive(10, wait_s=0.0) == []
        c.create_queue("elsewhere")
    r = mp("queues", "redrive", "dlq", "--to", "elsewhere", "--rate", "1", *b)
    assert r.returncode == 0 and b"to elsewhere at 1/s" in r.stdout, r.stderr
    r = mp("queues", "redrive", "dlq", "--cancel", *b)
    moved = int(re.fullmatch(rb"cancelled the redrive task of dlq: (\d) message\(s\) moved, the rest stay\n",
                             r.stdout).group(1))
    assert moved < 5  # 1 a second: cancelled before the 5 s it would take
    with connect(daemon) as c:
        assert c.queue_attributes("dlq").messages_visible == 5 - moved
        assert c.queue_attributes("elsewhere").messages_visible == moved
    lines = mp("queues", "redrive", "dlq", "--status", *b).stdout.splitlines()
    assert [line.split(b" ")[1] for line in lines] == [b"CANCELLED", b"COMPLETED"]
    r = mp("queues", "redrive", "dlq", "--cancel", *b)
    assert (r.returncode, r.stderr) == (1, b"millpond queues: INVALID_PARAMETER_VALUE: queue 'dlq' has no running "
                                           b"redrive task\n")
    r = mp("queues", "redrive", "dlq", "--cancel", "--rate", "5", *b)
    assert r.returncode == 2 and b"--to and --rate start a task" in r.stderr
    assert mp("queues", "redrive", "dlq", "--cancel", "--status", *b).returncode == 2  # argparse: one or the other
