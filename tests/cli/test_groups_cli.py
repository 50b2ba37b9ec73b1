# `millpond groups ...` and `millpond consume --group` as a user runs them: subprocesses against a broker subprocess.
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from millpond.client.sync import connect as sync_connect

from clikit import mp

pytestmark = pytest.mark.slow


def test_consume_as_a_group_member_commits_what_it_printed_then_groups_admin(daemon):
    b = ["--broker", daemon]
    assert mp("topics", "create", "logs", "--partitions", "2", *b).returncode == 0
    lines = b"".join(b"line %d\n" % i for i in range(10))
    assert mp("produce", "logs", *b, stdin=lines).returncode == 0
    r = mp("consume", "logs", "--group", "g", "--from-beginning", "--max", "6", *b)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()
    r = mp("consume", "logs", "--group", "g", "--max", "4", *b)  # resumes from the commits, not --from-beginning
    assert r.returncode == 0, r.stderr
    assert sorted(first + r.stdout.splitlines()) == sorted(lines.splitlines())

    listed = json.loads(mp("groups", "list", "--json", *b).stdout)
    assert listed == [{"group": "g", "state": "empty", "members": 0}]
    assert mp("groups", "list", *b).stdout == b"g\tempty\t0 member(s)\n"
    d = json.loads(mp("groups", "describe", "g", "--json", *b).stdout)
    assert (d["group"], d["state"], d["members"], d["lag"]) == ("g", "empty", [], 0)
    assert all(o["committed_offset"] == o["end_offset"] for o in d["offsets"])
    assert sum(o["committed_offset"] for o in d["offsets"]) == 10
    text = mp("groups", "describe", "g", *b).stdout.decode()
    assert text.startswith(f"consumer group g: empty, group epoch {d['group_epoch']}, ") and "lag 0" in text

    r = mp("groups", "reset-offsets", "g", "--topic", "logs", "--to-earliest", "--json", *b)
    assert json.loads(r.stdout) == [{"topic": "logs", "partition": 0, "offset": 0},
                                    {"topic": "logs", "partition": 1, "offset": 0}]
    ends = [p["high_watermark"] for p in json.loads(mp("topics", "describe", "logs", "--json", *b).stdout)["partitions"]]
    r = mp("groups", "reset-offsets", "g", "--topic", "logs", "--to-offset", "1", "-p", "1", *b)
    assert r.stdout == b"logs/1 -> %d\n" % min(1, ends[1])  # clamped into the log's range
    r = mp("groups", "reset-offsets", "g", "--topic", "logs", "--to-timestamp", "0", "--json", *b)
    assert [row["offset"] for row in json.loads(r.stdout)] == [0, 0]
    assert json.loads(mp("groups", "describe", "g", "--json", *b).stdout)["lag"] == 10
    r = mp("groups", "reset-offsets", "g", "--topic", "logs", "--to-latest", *b)
    assert r.returncode == 0 and json.loads(mp("groups", "describe", "g", "--json", *b).stdout)["lag"] == 0

    assert mp("groups", "delete", "g", *b).stdout == b"deleted consumer group g\n"
    assert json.loads(mp("groups", "list", "--json", *b).stdout) == []
    r = mp("groups", "describe", "g", *b)
    assert r.returncode == 1 and r.stderr.startswith(b"millpond groups: UNKNOWN_GROUP") and b"Traceback" not in r.stderr


def test_group_usage_errors_are_one_line(daemon):
    r = mp("consume", "logs", "--group", "g", "--partition", "0", "--broker", daemon)
    assert r.returncode == 2 and b"does not combine" in r.stderr
    r = mp("groups", "reset-offsets", "g", "--topic", "logs", "--broker", daemon)
    assert r.returncode == 2 and b"one of the arguments" in r.stderr


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_group_member_stopped_by_a_signal_commits_and_leaves_at_once(daemon, sig):
    import signal
    import time

    b = ["--broker", daemon]
    assert mp("topics", "create", "logs", *b).returncode == 0
    assert mp("produce", "logs", *b, stdin=b"a\nb\nc\n").returncode == 0
    member = subprocess.Popen([sys.executable, "-m", "millpond.broker.cli", "consume", "logs", "--group", "g",
                               "--from-beginning", *b], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert [member.stdout.readline() for _ in range(3)] == [b"a\n", b"b\n", b"c\n"]
    # let the member commit the batch it printed (a signal landing between printing and committing is allowed to
    # leave that batch uncommitted: it is read again, at least once), then stop it while it waits for more: a
    # bounded poll of the broker for the commit rather than a fixed sleep
    with sync_connect(daemon, client_id="watcher") as c:
        give_up = time.monotonic() + 20
        while sum(o.committed_offset for o in c.describe_group("g").offsets) != 3:
            assert time.monotonic() < give_up, "the member did not commit what it printed"
            time.sleep(0.02)
    member.send_signal(getattr(signal, sig))
    started = time.monotonic()
    _, err = member.communicate(timeout=20)
    assert member.returncode == 128 + getattr(signal, sig) and b"Traceback" not in err
    assert time.monotonic() - started < 10  # well before the 10 s session timeout would have expired it
    described = mp("groups", "describe", "g", "--json", *b)
    assert described.returncode == 0, (described.stderr, err)
    d = json.loads(described.stdout)
    assert d["members"] == [] and sum(o["committed_offset"] for o in d["offsets"]) == 3


def test_describe_piped_into_head_exits_quietly(daemon):
    b = ["--broker", daemon]
    for i in range(30):
        assert mp("topics", "create", f"t{i}", *b).returncode == 0
    r = subprocess.run(f"{sys.executable} -m broker.cli topics list {' '.join(b)} | head -1", shell=True,
                       capture_output=True, timeout=60)
    assert r.stdout == b"t0\n" and r.stderr == b""


def test_describe_names_each_epoch_as_its_json_field_does(capsys):
    from millpond.broker.cli.groups import _describe
    from millpond.client.types import GroupDescription, GroupMemberDescription, GroupPartitionOffsets

    member = GroupMemberDescription("m-1", None, "app", "10.0.0.1", 6, "stable", ("logs",), (("logs", 0),), ())
    d = GroupDescription("g", "stable", 7, "uniform", (member,),
                         (GroupPartitionOffsets("logs", 0, 3, "", 5, 2),))
    _describe(d, as_json=False)
    text = capsys.readouterr().out
    assert "group epoch 7," in text and "member epoch 6 stable" in text and "generation" not in text
    _describe(d, as_json=True)
    doc = json.loads(capsys.readouterr().out)
    assert (doc["group_epoch"], doc["members"][0]["member_epoch"]) == (7, 6)
