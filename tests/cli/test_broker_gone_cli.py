# A broker that dies under `millpond produce` and `millpond consume` (plain and as a group member): the command
# notices within BROKER_GONE_S (not after the client's minutes of retries), says so in one line naming the broker,
# prints its summary counts and exits 1; what produce reported acknowledged is in the log after a restart.
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from millpond.broker.cli._clientcmd import BROKER_GONE_S
from millpond.client.sync import connect
from tests.daemonproc import start_daemon, stop_daemon

pytestmark = pytest.mark.slow

COMMAND = [sys.executable, "-X", "faulthandler", "-m", "millpond.broker.cli"]  # SIGABRT: stacks on stderr


def _gone_line(command: str, address: str) -> str:
    return (f"millpond {command}: lost the connection to the broker at {address} (closed by the broker) and could "
            f"not connect again within {BROKER_GONE_S:g} s (connection refused)")


def _end_offset(address: str, topic: str) -> int:
    with connect(address) as c:
        return sum(p.log_end_offset for p in c.describe_topic(topic).partitions)


def _until(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_produce_ends_with_the_counts_when_the_broker_dies(tmp_path):
    broker, port = start_daemon(tmp_path / "data", tmp_path / "broker.log")
    address = f"127.0.0.1:{port}"
    with connect(address) as c:
        c.create_topic("logs")
    # stdin stays open: the command would wait on its input for ever if it did not watch the broker
    proc = subprocess.Popen([*COMMAND, "produce", "logs", "-b", address], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"".join(b"line %d\n" % i for i in range(1000)))
        proc.stdin.flush()
        _until(lambda: _end_offset(address, "logs") == 1000)
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        assert proc.stderr is not None
        try:
            proc.wait(timeout=60)  # stdin still open (communicate() would close it)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # -X faulthandler: every thread's stack on stderr
            proc.wait(timeout=10)
            raise AssertionError("millpond produce did not end after its broker died; its stderr: "
                                 + proc.stderr.read().decode(errors="replace")[-6000:]) from None
        err = proc.stderr.read()
    finally:
        proc.kill()
        stop_daemon(broker)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()
    lines = err.decode().splitlines()
    assert proc.returncode == 1, lines
    assert re.fullmatch(r"produced 1000 records in [\d.]+ s", lines[-2]), lines
    assert lines[-1] == _gone_line("produce", address) + \
        "; 1000 record(s) read, 1000 acknowledged, 0 not acknowledged"
    restarted, _ = start_daemon(tmp_path / "data", tmp_path / "broker2.log", port=port)
    try:
        assert _end_offset(address, "logs") == 1000  # every record reported acknowledged is in the log
    finally:
        stop_daemon(restarted)


@pytest.mark.parametrize("group", [[], ["--group", "g"]], ids=["assigned", "group"])
def test_consume_ends_with_the_count_when_the_broker_dies(tmp_path, group):
    broker, port = start_daemon(tmp_path / "data", tmp_path / "broker.log")
    address = f"127.0.0.1:{port}"
    with connect(address) as c:
        c.create_topic("logs", 2)
        with c.producer() as p:
            for i in range(100):
                p.send("logs", b"r%d" % i, key=b"%d" % i)
    proc = subprocess.Popen([*COMMAND, "consume", "logs", "--from-beginning", *group, "-b", address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        printed = [proc.stdout.readline() for _ in range(100)]  # every record printed: the consumer is waiting
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        stop_daemon(broker)
    assert sorted(printed) == sorted(b"r%d\n" % i for i in range(100)) and rest == b""
    lines = err.decode().splitlines()
    assert proc.returncode == 1, lines
    assert re.fullmatch(r"consumed 100 records in [\d.]+ s", lines[-2]), lines
    assert lines[-1] == _gone_line("consume", address) + "; 100 record(s) printed before"
