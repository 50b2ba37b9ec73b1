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
