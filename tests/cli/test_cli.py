# The topics / produce / consume subcommands as a user runs them: subprocesses against a broker subprocess.
from __future__ import annotations

import json
import re

import pytest

from clikit import mp

pytestmark = pytest.mark.slow


def test_file_round_trip_line_for_line(daemon, tmp_path):
    b = ["--broker", daemon]
    assert mp("topics", "create", "logs", "--partitions", "1", *b).returncode == 0
    lines = [b"line %d" % i for i in range(20_000)] + [b"", b"bin\x00\xff\r", "ünï".encode()]
    data = b"\n".join(lines) + b"\n"
    r = mp("produce", "logs", *b, stdin=data)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rb"produced 20003 records in [\d.]+ s\n", r.stderr)
    r = mp("consume", "logs", "--from-beginning", "-e", *b)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data


def test_keys_partition_json_and_max(daemon):
    b = ["--broker", daemon]
    assert mp("topics", "create", "kv", "--partitions", "2", "--retention-s", "60", *b).returncode == 0
    r = mp("produce", "kv", "--key-separator", ":", "--partition", "1", *b, stdin=b"a:1\nb:\xff\nnokey\n")
    assert r.returncode == 0, r.stderr
    r = mp("consume", "kv", "--from-beginning", "--partition", "1", "--json", "--max", "3", *b)
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["partition"], x["offset"], x["key"], x["value"]) for x in rows] == [
        (1, 0, "a", "1"), (1, 1, "b", {"base64": "/w=="}), (1, 2, None, "nokey")]
    assert all(isinstance(x["timestamp_ms"], int) and x["topic"] == "kv" for x in rows)
    d = json.loads(mp("topics", "describe", "kv", "--json", *b).stdout)
    assert [p["log_end_offset"] for p in d["partitions"]] == [0, 3] and d["config"]["retention_s"] == 60.0
    assert json.loads(mp("topics", "list", "--json", *b).stdout) == ["kv"]
    assert mp("topics", "delete", "kv", *b).returncode == 0
    assert mp("topics", "list", *b).stdout == b""


def test_expected_errors_are_one_line_without_traceback(daemon):
    r = mp("topics", "list", "--broker", "127.0.0.1:1")
    assert r.returncode != 0
    assert r.stderr.decode().strip() == ("millpond topics: cannot connect to 127.0.0.1:1: connection refused (is a "
                                         "broker running there? millpond serve starts one)")
    r = mp("consume", "nope", "-e", "--broker", daemon)
    assert r.returncode != 0 and b"Traceback" not in r.stderr and b"nope" in r.stderr
    r = mp("produce", "nope", "--broker", daemon, stdin=b"x\n")
    assert r.returncode != 0 and b"does not exist" in r.stderr and b"Traceback" not in r.stderr
    r = mp("topics", "create", "bad/name", "--broker", daemon)
    assert r.returncode != 0 and r.stderr.startswith(b"millpond topics: INVALID_TOPIC_NAME")
