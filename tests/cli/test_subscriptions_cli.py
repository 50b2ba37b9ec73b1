# `millpond subscriptions ...` and `millpond publish` as a user runs them: subprocesses against a broker subprocess.
from __future__ import annotations

import json
import time

import pytest

from clikit import mp

pytestmark = pytest.mark.slow


def _receive(b, queue, expected):
    rows = []
    for _ in range(50):
        r = mp("receive", queue, "--max", "100", "--wait-s", "0.2", "--json", *b)
        rows += [json.loads(line) for line in r.stdout.splitlines()]
        if len(rows) >= expected:
            break
        time.sleep(0.1)
    return rows


def test_subscriptions_create_list_describe_delete_and_publish(daemon):
    b = ["--broker", daemon]
    assert mp("topics", "create", "orders", "--partitions", "2", *b).returncode == 0
    for q in ("eu", "all"):
        assert mp("queues", "create", q, *b).returncode == 0
    r = mp("subscriptions", "create", "orders", "--queue", "eu", "--raw", "--filter-policy",
           '{"region": ["eu"]}', *b)
    assert r.returncode == 0 and r.stdout.startswith(b"subscription "), r.stderr
    eu = r.stdout.split()[1].rstrip(b":").decode()
    r = mp("subscriptions", "create", "orders", "--queue", "all", *b)
    all_ = r.stdout.split()[1].rstrip(b":").decode()
    r = mp("publish", "orders", "o-1", "--header", "region=eu", "--key", "c1", *b)
    assert r.returncode == 0 and r.stdout.startswith(b"published to orders partition "), r.stderr
    assert mp("publish", "orders", "o-2", "-H", "region=us", *b).returncode == 0
    rows = _receive(b, "eu", 1)
    assert [(row["body"], row["attributes"]) for row in rows] == [("o-1", {"region": "eu"})]
    rows = _receive(b, "all", 2)
    assert sorted(json.loads(row["body"])["Message"] for row in rows) == ["o-1", "o-2"]

    listed = json.loads(mp("subscriptions", "list", "orders", "--json", *b).stdout)
    assert {s["id"] for s in listed} == {eu, all_}
    assert mp("subscriptions", "list", *b).stdout.count(b"orders -> ") == 2
    d = json.loads(mp("subscriptions", "describe", eu, "--json", *b).stdout)
    assert (d["delivered"], d["filtered_out"], d["lag"]) == (1, 1, 0)
    text = mp("subscriptions", "describe", eu, *b).stdout
    assert text.startswith(f"subscription {eu}: topic orders -> queue eu\ndelivered 1, filtered out 1".encode())

    r = mp("subscriptions", "create", "orders", "--queue", "eu", "--filter-policy", '{"region": "eu"}', *b)
    assert r.returncode == 1 and r.stderr.startswith(b"millpond subscriptions: INVALID_PARAMETER_VALUE")
    assert b"region" in r.stderr and b"Traceback" not in r.stderr
    r = mp("subscriptions", "create", "orders", "--queue", "eu", "--start", "soon", *b)
    assert r.returncode == 2 and b"--start" in r.stderr
    r = mp("publish", "orders", "x", "--header", "novalue", *b)
    assert r.returncode == 2 and b"NAME=VALUE" in r.stderr
    assert mp("subscriptions", "delete", eu, *b).stdout == f"deleted subscription {eu}\n".encode()
    r = mp("subscriptions", "describe", eu, *b)
    assert r.returncode == 1 and r.stderr.startswith(b"millpond subscriptions: UNKNOWN_SUBSCRIPTION")
