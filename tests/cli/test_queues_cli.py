# `millpond queues ...`, `millpond send` and `millpond receive` as a user runs them: subprocesses against a broker
# subprocess.
from __future__ import annotations

import json

import pytest

from clikit import mp

pytestmark = pytest.mark.slow


def test_queues_admin_send_and_receive(daemon):
    b = ["--broker", daemon]
    r = mp("queues", "create", "jobs", "--visibility-timeout-s", "60", *b)
    assert (r.returncode, r.stdout) == (0, b"created queue jobs\n"), r.stderr
    assert mp("queues", "create", "jobs", "--visibility-timeout-s", "60", *b).returncode == 0  # same: idempotent
    r = mp("queues", "create", "jobs", "--visibility-timeout-s", "61", *b)
    assert r.returncode == 1 and r.stderr.startswith(b"millpond queues: QUEUE_ALREADY_EXISTS")
    assert mp("queues", "create", "f.fifo", "--content-based-deduplication", *b).stdout == b"created FIFO queue f.fifo\n"
    assert mp("queues", "list", *b).stdout == b"f.fifo\njobs\n"
    assert json.loads(mp("queues", "list", "--prefix", "j", "--json", *b).stdout) == ["jobs"]

    lines = b"".join(b"job %d\n" % i for i in range(25))
    r = mp("send", "jobs", *b, stdin=lines)
    assert r.returncode == 0 and r.stderr.startswith(b"sent 25 message(s)"), r.stderr
    d = json.loads(mp("queues", "describe", "jobs", "--json", *b).stdout)
    assert (d["messages_visible"], d["visibility_timeout_s"], d["fifo"]) == (25, 60.0, False)
    assert mp("queues", "describe", "jobs", *b).stdout.startswith(b"queue jobs: 25 visible, 0 in flight, 0 delayed\n")

    r = mp("receive", "jobs", "--max", "5", "--no-delete", "--json", *b)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 5 and all(row["receive_count"] == 1 and row["body"].startswith("job ") for row in rows)
    d = json.loads(mp("queues", "describe", "jobs", "--json", *b).stdout)
    assert (d["messages_visible"], d["messages_in_flight"]) == (20, 5)  # not deleted: back after 60 s
    r = mp("receive", "jobs", "--max", "100", "--wait-s", "0", *b)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 20
    d = json.loads(mp("queues", "describe", "jobs", "--json", *b).stdout)
    assert (d["messages_visible"], d["messages_in_flight"]) == (0, 5)
    assert mp("queues", "purge", "jobs", *b).stdout == b"purged queue jobs\n"
    assert json.loads(mp("queues", "describe", "jobs", "--json", *b).stdout)["messages_in_flight"] == 0

    assert mp("send", "f.fifo", "--group-id", "g", *b, stdin=b"a\nb\na\n").returncode == 0
    assert mp("receive", "f.fifo", "--wait-s", "0", *b).stdout == b"a\nb\n"  # the second "a": a duplicate
    r = mp("send", "f.fifo", *b, stdin=b"x\n")
    assert r.returncode == 1 and r.stderr.startswith(b"millpond send: MISSING_PARAMETER")

    assert mp("queues", "delete", "jobs", *b).stdout == b"deleted queue jobs\n"
    r = mp("receive", "jobs", *b)
    assert r.returncode == 1 and r.stderr.startswith(b"millpond receive: UNKNOWN_QUEUE") and b"Traceback" not in r.stderr
    r = mp("send", "nope", *b, stdin=b"x\n")
    assert r.returncode == 1 and r.stderr.startswith(b"millpond send: UNKNOWN_QUEUE")
    r = mp("receive", "f.fifo", "--max", "0", *b)
    assert r.returncode == 2 and b"--max" in r.stderr


def _received(daemon: str, queue: str) -> list[bytes]:
    r = mp("receive", queue, "--max", "100", "--wait-s", "0", "--broker", daemon)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


@pytest.mark.parametrize("queue", ["jobs", "jobs.fifo"])
def test_a_line_the_queue_refuses_is_named_by_its_number(daemon, queue):
    b = ["--broker", daemon]
    assert mp("queues", "create", queue, *b).returncode == 0
    fifo = ["--group-id", "g"] if queue.endswith(".fifo") else []
    # 25 lines, the 12th empty: it is in the second request (lines 11-20); --on-error stop reads no further
    lines = b"".join(b"m%d\n" % i if i != 12 else b"\n" for i in range(1, 26))
    r = mp("send", queue, *fifo, *b, stdin=lines)
    err = r.stderr.decode().splitlines()
    assert r.returncode == 1, err
    assert err[0].startswith("sent 19 message(s), 48 bytes, to " + queue)
    assert err[1] == ("millpond send: line 12: INVALID_PARAMETER_VALUE: the message body must not be empty; "
                      "stopped after line 20, the last of its request (--on-error skip goes on past such lines)")
    assert sorted(_received(daemon, queue)) == sorted(b"m%d" % i for i in (*range(1, 12), *range(13, 21)))

    # skip: every refused line reported, the rest sent, exit 0; a line past the batch bound goes alone
    big = b"x" * (1024 * 1024 + 1)
    r = mp("send", queue, *fifo, "--on-error", "skip", *b, stdin=b"a\n\nb\n" + big + b"\nc\n")
    err = r.stderr.decode().splitlines()
    assert r.returncode == 0, err
    assert err[0] == "millpond send: line 2: INVALID_PARAMETER_VALUE: the message body must not be empty: skipped"
    assert err[1].startswith("millpond send: line 4: ") and err[1].endswith(": skipped")
    assert err[2].startswith("sent 3 message(s), 3 bytes, to " + queue)
    assert sorted(_received(daemon, queue)) == [b"a", b"b", b"c"]
