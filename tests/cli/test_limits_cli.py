# `millpond limits set|list|delete` and `millpond produce --client-id` as a user runs them: subprocesses against a
# broker subprocess.
from __future__ import annotations

import json
import re

import pytest

from millpond.broker.cli.limits import parse_params

from clikit import mp

pytestmark = pytest.mark.slow


def test_set_list_delete_and_a_throttled_cli_producer(daemon):
    b = ["--broker", daemon]
    r = mp("limits", "set", "slow", "--scope", "client:cli-*", "--unit", "records", "--algorithm", "leaky_bucket",
           "--rate", "1000", "--burst", "100", "--mode", "reject", *b)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == ("set limit policy slow: client:cli-* records leaky_bucket "
                                         "burst=100,rate=1000 reject")
    r = mp("limits", "set", "win", "--scope", "topic:logs", "--algorithm", "sliding_window", "--param", "limit=500",
           "--param", "window_s=1.5", "--mode", "reject", *b)
    assert r.returncode == 0, r.stderr
    assert mp("topics", "create", "t", *b).returncode == 0
    # 300 records through the 100-record burst: split, throttled, all delivered
    r = mp("produce", "t", "--client-id", "cli-1", *b, stdin=b"".join(b"%d\n" % i for i in range(300)))
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rb"produced 300 records in [\d.]+ s, throttled [\d.]+ s by policy slow\n", r.stderr)
    policies = {p["name"]: p for p in json.loads(mp("limits", "list", "--json", *b).stdout)}
    assert sorted(policies) == ["default", "slow", "win"]
    assert policies["win"]["params"] == {"limit": 500, "window_s": 1.5} and policies["win"]["pattern"] == "logs"
    slow = policies["slow"]["stats"]
    assert slow["throttled"] >= 1 and slow["throttled_by_key"] == {"cli-1": slow["throttled"]}
    assert slow["never_fits"] == 1 and slow["admitted"] >= 3
    table = mp("limits", "list", *b).stdout.decode().splitlines()
    assert table[0].split() == ["name", "operation", "scope", "unit", "algorithm", "params", "mode", "admitted",
                                "throttled", "delayed", "never_fits", "keys"]
    row = next(line.split() for line in table if line.startswith("slow "))
    assert row[:7] == ["slow", "write", "client:cli-*", "records", "leaky_bucket", "burst=100,rate=1000", "reject"]
    assert int(row[8]) == slow["throttled"]
    assert f"slow: throttled by key: cli-1={slow['throttled']}" in table
    assert mp("limits", "delete", "slow", *b).stdout == b"deleted limit policy slow\n"
    r = mp("limits", "delete", "slow", *b)
    assert r.returncode == 1
    assert r.stderr.decode().strip() == "millpond limits: UNKNOWN_POLICY: no limit policy named 'slow'"
    # a receive policy: queue receives per client
    r = mp("limits", "set", "reads", "--scope", "client:cli-*", "--unit", "requests", "--operation", "receive",
           "--algorithm", "token_bucket", "--rate", "10", "--burst", "10", *b)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == ("set limit policy reads: client:cli-* requests token_bucket "
                                         "burst=10,rate=10 reject (receive)")
    policies = {p["name"]: p for p in json.loads(mp("limits", "list", "--json", *b).stdout)}
    assert policies["reads"]["operation"] == "receive" and policies["win"]["operation"] == "write"
    r = mp("limits", "set", "bad", "--scope", "topic:t", "--operation", "receive", "--rate", "5", *b)
    assert r.returncode == 1 and b"INVALID_CONFIG" in r.stderr and b"Traceback" not in r.stderr
    r = mp("limits", "set", "bad", "--rate", "5", *b)  # every client, unless said so
    assert r.returncode == 2 and b"required: --scope" in r.stderr and b"usage: millpond limits set" in r.stderr
    r = mp("limits", "set", "bad", "--scope", "client:*", "--rate", "-5", *b)
    assert r.returncode == 1 and b"INVALID_CONFIG" in r.stderr and b"rate" in r.stderr and b"Traceback" not in r.stderr


def test_param_values_are_typed():
    assert parse_params(["window_s=1.5", "limit=500", "debt=true", "x=abc"]) == {
        "window_s": 1.5, "limit": 500, "debt": True, "x": "abc"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_params(["novalue"])
