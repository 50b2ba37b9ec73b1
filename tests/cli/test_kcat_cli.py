# kcat's habits in the CLI, as a user runs it against a broker subprocess: -b anywhere and MILLPOND_BROKER, -o
# offset specs, -f format strings and -K on consume, -H headers on produce, consume --group -e, topics
# add-partitions, an unknown option under the subcommand's usage, lines that cannot be sent, the summary lines.
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from clikit import mp
from millpond.broker.cli._records import compile_format, parse_offset
from millpond.broker.wire.batch import Record
from millpond.client.sync import connect

pytestmark = pytest.mark.slow


def fill(daemon: str, topic: str, n: int, partitions: int = 1) -> None:
    """``n`` records per partition, value ``p<partition>-<i>``, timestamps 1000 * (i + 1) ms."""
    with connect(daemon) as c:
        c.create_topic(topic, partitions)
        with c.producer() as p:
            for part in range(partitions):
                for i in range(n):
                    p.send(topic, b"p%d-%d" % (part, i), partition=part, timestamp_ms=1000 * (i + 1))


def test_the_broker_before_the_command_and_from_the_environment(daemon):
    assert mp("-b", daemon, "topics", "create", "a").returncode == 0
    assert mp("--broker", daemon, "topics", "list").stdout == b"a\n"
    assert mp("topics", "-b", daemon, "list").stdout == b"a\n"  # between the command and its action
    assert mp("-b", daemon, "groups", "list").returncode == 0  # and one before is not lost on the way
    env = {**os.environ, "MILLPOND_BROKER": daemon}
    r = subprocess.run([sys.executable, "-m", "millpond.broker.cli", "topics", "list"], env=env,
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == b"a\n"
    # the command's own -b wins over one before it, and over the environment
    r = subprocess.run([sys.executable, "-m", "millpond.broker.cli", "-b", "127.0.0.1:1", "topics", "list", "-b",
                        daemon], env={**env, "MILLPOND_BROKER": "127.0.0.1:1"}, capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == b"a\n"
    r = mp("-b", "127.0.0.1:1", "topics", "list")
    assert r.stderr.decode().strip() == ("millpond topics: cannot connect to 127.0.0.1:1: connection refused (is a "
                                         "broker running there? millpond serve starts one)")


def test_an_unknown_option_is_reported_under_the_subcommands_usage(daemon):
    r = mp("topics", "create", "x", "--partitons", "3", "-b", daemon)
    assert r.returncode == 2
    err = r.stderr.decode()
    assert err.startswith("usage: millpond topics create ") and \
        err.rstrip().endswith("millpond topics create: error: unrecognized arguments: --partitons 3")
    r = mp("consume", "x", "--bogus")
    assert r.returncode == 2 and r.stderr.startswith(b"usage: millpond consume ")


@pytest.mark.parametrize(("spec", "expected"), [
    ("beginning", [0, 1, 2, 3, 4]), ("end", []), ("3", [3, 4]), ("0", [0, 1, 2, 3, 4]), ("99", []),
    ("-2", [3, 4]), ("-99", [0, 1, 2, 3, 4]), ("s@3000", [2, 3, 4]), ("s@1", [0, 1, 2, 3, 4]), ("s@99000", []),
])
def test_each_offset_spec(daemon, spec, expected):
    fill(daemon, "o", 5, partitions=2)
    r = mp("consume", "o", "-o", spec, "-e", "-f", "%p:%o\\n", "-b", daemon)
    assert r.returncode == 0, r.stderr
    got = sorted(tuple(map(int, line.split(b":"))) for line in r.stdout.splitlines())
    assert got == sorted((p, o) for p in (0, 1) for o in expected)
    said = b"millpond consume: offset 99 is out of range: o/0 ends at 5, o/1 ends at 5; reading from there\n" \
        if spec == "99" else b""  # an absolute offset past the end is said, as kcat does; -N and s@TS are clamped
    assert re.fullmatch(re.escape(said) + rb"consumed %d records in [\d.]+ s\n" % (2 * len(expected)), r.stderr)


def test_bad_offset_specs_and_clashing_flags(daemon):
    fill(daemon, "o", 1)
    for args, words in ((["-o", "middle"], b"-o takes beginning, end"), (["-o", "s@x"], b"-o takes"),
                        (["-o", "beginning", "--from-beginning"], b"give one"),
                        (["--json", "-K", ":"], b"--json and --key-separator"),
                        (["-f", "%z"], b"unknown %z"), (["--group", "g", "-o", "3"], b"with --group, -o takes")):
        r = mp("consume", "o", "-e", *args, "-b", daemon)
        assert r.returncode == 2 and words in r.stderr and b"Traceback" not in r.stderr, (args, r.stderr)


def test_formats_keys_and_headers_from_produce_to_consume(daemon):
    b = ["-b", daemon]
    assert mp("topics", "create", "f", *b).returncode == 0
    r = mp("produce", "f", "-K", ":", "-H", "src=cli", "-H", "eq=a=b", *b, stdin=b"k1:v1\nnokey\nk3:\n")
    assert r.returncode == 0, r.stderr
    r = mp("consume", "f", "-o", "beginning", "-e", "-f", "%t|%p|%o|%k|%s|%h|%K|%S|%%\\t%T\\n", *b)
    assert r.returncode == 0, r.stderr
    rows = [line.split(b"\t") for line in r.stdout.splitlines()]
    assert [row[0] for row in rows] == [b"f|0|0|k1|v1|src=cli,eq=a=b|2|2|%", b"f|0|1||nokey|src=cli,eq=a=b|-1|5|%",
                                        b"f|0|2|k3||src=cli,eq=a=b|2|0|%"]
    assert all(int(row[1]) > 1_600_000_000_000 for row in rows)
    r = mp("consume", "f", "-o", "beginning", "-e", "-K", "=>", *b)
    assert r.stdout == b"k1=>v1\n=>nokey\nk3=>\n"
    r = mp("produce", "f", "-H", "novalue", *b, stdin=b"x\n")
    assert r.returncode == 2 and b"--header takes NAME=VALUE" in r.stderr


def test_the_format_language():
    r = Record(topic="t", partition=1, offset=7, timestamp_ms=5, key=None, value=b"v", headers={"a": b"1"})
    assert compile_format("%k|%s|%K|%h|\\\\|%%s|\\0")([r, r]) == b"|v|-1|a=1|\\|%s|\0" * 2
    assert compile_format("plain")([r]) == b"plain"
    for bad in ("%q", "\\q"):
        with pytest.raises(ValueError, match="unknown"):
            compile_format(bad)
    assert [parse_offset(s) for s in ("beginning", "end", "5", "-5", "s@10")] == [
        ("beginning", 0), ("end", 0), ("offset", 5), ("from_end", 5), ("timestamp", 10)]


def test_a_group_member_exits_at_the_end_of_what_it_owns(daemon):
    fill(daemon, "g", 4, partitions=3)
    r = mp("consume", "g", "--group", "G", "-o", "beginning", "-e", "-b", daemon)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(b"p%d-%d" % (p, i) for p in range(3) for i in range(4))
    with connect(daemon) as c:
        committed = {(o.topic, o.partition): o.committed_offset for o in c.describe_group("G").offsets}
        assert committed == {("g", p): 4 for p in range(3)}
    # again: everything is committed, so it is at the end at once and prints nothing
    r = mp("consume", "g", "--group", "G", "-e", "-b", daemon)
    assert r.returncode == 0 and r.stdout == b"", r.stderr
    assert re.fullmatch(rb"consumed 0 records in [\d.]+ s\n", r.stderr)


def test_add_partitions(daemon):
    b = ["-b", daemon]
    assert mp("topics", "create", "grow", *b).returncode == 0
    r = mp("topics", "add-partitions", "grow", "--partitions", "4", *b)
    assert r.returncode == 0 and r.stdout == b"topic grow has 4 partition(s)\n", r.stderr
    with connect(daemon) as c:
        assert len(c.describe_topic("grow").partitions) == 4
    r = mp("topics", "add-partitions", "grow", "--partitions", "2", *b)
    assert r.returncode == 1 and r.stderr.startswith(b"millpond topics: INVALID_PARTITIONS")


@pytest.mark.parametrize("on_error", ["stop", "skip"])
def test_a_line_too_large_in_the_middle(daemon, on_error):
    b = ["-b", daemon]
    assert mp("topics", "create", "big", *b).returncode == 0
    lines = [b"a", b"b", b"x" * 9_000_000, b"c", b"d"]
    args = [] if on_error == "stop" else ["--on-error", "skip"]
    r = mp("produce", "big", *args, *b, stdin=b"\n".join(lines) + b"\n")
    err = r.stderr.decode()
    reason = "line 3: larger than the broker's batch_bytes_max (8388608 bytes; batch_bytes_max in the broker's config"
    if on_error == "stop":
        assert r.returncode == 1
        assert f"millpond produce: {reason} file); stopped there: 2 record(s) before it acknowledged" in err
        expected = b"a\nb\n"
    else:
        assert r.returncode == 0
        assert f"millpond produce: {reason} file): skipped" in err
        expected = b"a\nb\nc\nd\n"
    assert re.search(rf"produced {len(expected.splitlines())} records in [\d.]+ s\n", err)
    assert mp("consume", "big", "-o", "beginning", "-e", *b).stdout == expected


@pytest.mark.parametrize("on_error", ["stop", "skip"])
def test_a_line_a_limit_policy_never_admits(daemon, on_error):
    b = ["-b", daemon]
    assert mp("topics", "create", "cost", *b).returncode == 0
    r = mp("limits", "set", "small", "--scope", "client:app-*", "--unit", "bytes", "--algorithm", "token_bucket",
           "--rate", "1000000", "--burst", "500", *b)
    assert r.returncode == 0, r.stderr
    lines = [b"a", b"b", b"x" * 1000, b"c"]
    args = [] if on_error == "stop" else ["--on-error", "skip"]
    # refused by the broker, not at send(): found once its answer is in, after the lines behind it were sent
    r = mp("produce", "cost", "--client-id", "app-1", *args, *b, stdin=b"\n".join(lines) + b"\n")
    err = r.stderr.decode()
    reason = "line 3: costs more than limit policy 'small' ever admits (500 bytes; millpond limits set small ...)"
    if on_error == "stop":
        assert r.returncode == 1
        assert f"millpond produce: {reason}; stopped after line 4: 3 record(s) acknowledged" in err, err
    else:
        assert r.returncode == 0 and f"millpond produce: {reason}: skipped" in err, err
    assert re.search(r"produced 3 records in [\d.]+ s\n", err), err
    assert mp("consume", "cost", "-o", "beginning", "-e", *b).stdout == b"a\nb\nc\n"
