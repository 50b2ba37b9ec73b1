# `millpond produce` as a user runs it, against a broker subprocess: stopping it while throttled (the README's
# `limits set slow` example), headers, and lines that cannot be sent.
from __future__ import annotations

import os
import pty
import re
import selectors
import signal
import subprocess
import sys
import time

import pytest

from clikit import mp
from millpond.client.sync import connect

pytestmark = pytest.mark.slow

LINES = 100_000


def wait_for(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def log_values(daemon: str, topic: str) -> list[bytes]:
    with connect(daemon) as c:
        end = c.list_offsets(topic, 0, "latest")[0]
        out: list[bytes] = []
        if not end:
            return out
        with c.consumer(auto_offset_reset="earliest") as cons:
            cons.assign([(topic, 0)])
            while len(out) < end:
                out.extend(r.value for r in cons.getmany(timeout_s=5))
        return out


def throttled_produce(daemon: str, tmp_path) -> subprocess.Popen:
    """The README's example: 1,000 records/s for clients app-*, a 100,000-line file produced by app-1."""
    assert mp("topics", "create", "logs", "-b", daemon).returncode == 0
    r = mp("limits", "set", "slow", "--scope", "client:app-*", "--unit", "records", "--algorithm", "leaky_bucket",
           "--rate", "1000", "--burst", "100", "-b", daemon)
    assert r.returncode == 0, r.stderr
    numbers = tmp_path / "numbers.txt"
    numbers.write_bytes(b"".join(b"%d\n" % i for i in range(1, LINES + 1)))
    with open(numbers, "rb") as stdin:
        # -X faulthandler: SIGABRT makes a stalled command print every thread's stack (below)
        proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "millpond.broker.cli", "produce", "logs",
                                 "--client-id", "app-1", "-b", daemon], stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    try:
        with connect(daemon) as c:  # a few hundred through: the produce is under way and being throttled
            wait_for(lambda: c.list_offsets("logs", 0, "latest")[0] >= 300, timeout_s=60.0)  # a loaded machine
    except BaseException as exc:
        if proc.poll() is None:  # stalled: its threads' stacks, then gone (never left to fail a later test)
            proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate()
        if isinstance(exc, AssertionError):
            raise AssertionError(f"{exc}; produce exit status {proc.returncode}, its stderr: "
                                 f"{err.decode(errors='replace')[-6000:]}") from exc
        raise
    return proc


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_throttled_produce_within_bounds(daemon, tmp_path, signum):
    proc = throttled_produce(daemon, tmp_path)
    signalled = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - signalled
    assert took < 5, (took, err)
    assert proc.returncode == 128 + signum  # 130 after Ctrl-C, 143 after SIGTERM, as the shell reports them
    text = err.decode()
    name = signal.Signals(signum).name
    assert f"{name}: stopped reading after" in text
    m = re.search(rf"stopped by {name}: (\d+) record\(s\) read, (\d+) acknowledged, (\d+) not acknowledged\n", text)
    assert m, text
    read, acked, unsent = map(int, m.groups())
    assert 300 <= acked < read <= LINES and unsent == read - acked
    m = re.search(rf"produced {acked} records in ([\d.]+) s, throttled ([\d.]+) s by policy slow", text)
    # throttled is wall-clock time, not summed over the batches waiting at once (the last wait may outlast it)
    assert m and 0 < float(m.group(2)) <= float(m.group(1)) + 0.5, text
    stored = log_values(daemon, "logs")
    # what it reported as sent is in the log, in order; a batch on its way when it gave up may be there too
    assert len(stored) >= acked and stored == [b"%d" % i for i in range(1, len(stored) + 1)]


def test_a_second_signal_aborts_at_once(daemon, tmp_path):
    proc = throttled_produce(daemon, tmp_path)
    proc.send_signal(signal.SIGINT)
    with selectors.DefaultSelector() as sel:  # the first one is handled: it flushes for up to 2 s
        sel.register(proc.stderr, selectors.EVENT_READ)
        assert sel.select(10)
    first = proc.stderr.readline()
    assert b"SIGINT: stopped reading after" in first
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - signalled < 1.5, err
    assert proc.returncode == 130
    m = re.search(rb"aborted by SIGINT: (\d+) record\(s\) read, (\d+) acknowledged", err)
    assert m, err
    stored = log_values(daemon, "logs")
    assert len(stored) >= int(m.group(2)) and stored == [b"%d" % i for i in range(1, len(stored) + 1)]


def read_terminal(fd: int, until: bytes | None = None, timeout_s: float = 30) -> bytes:
    """What a process wrote to the terminal ``fd`` (the main side of a pseudo-terminal): up to ``until`` (after
    its escape sequences are taken out), or until its other end is closed."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                break
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other end is closed: all read
                break
            if not chunk:
                break
            seen += chunk
            if until is not None and until in plain(seen):
                break
    return seen


def plain(data: bytes) -> bytes:
    return re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", data)


def test_a_live_line_on_a_terminal_then_the_summary(daemon, tmp_path):
    assert mp("topics", "create", "t", "-b", daemon).returncode == 0
    assert mp("limits", "set", "slow", "--scope", "client:app-*", "--rate", "1000", "--burst", "100",
              "-b", daemon).returncode == 0
    main, terminal = pty.openpty()
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "millpond.broker.cli", "produce", "t", "--client-id", "app-1",
                             "-b", daemon], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=terminal, env=env)
    os.close(terminal)
    try:
        proc.stdin.write(b"".join(b"%d\n" % i for i in range(2000)))  # 2 s at the policy's rate
        proc.stdin.close()
        seen = read_terminal(main)
        proc.wait(30)
    finally:
        os.close(main)
        proc.stdout.close()
    assert proc.returncode == 0
    text = plain(seen).decode()
    assert re.search(r"produce t: [\d,]+ records +[\d,]+/s +throttled [\d.]+ s by policy slow", text), text
    assert re.search(r"produced 2000 records in [\d.]+ s, throttled [\d.]+ s by policy slow\r?\n", text), text

    main, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "millpond.broker.cli", "consume", "t", "--max", "2001", "-b",
                             daemon], stdout=subprocess.PIPE, stderr=terminal, env=env)
    os.close(terminal)
    try:
        read_terminal(main, until=b"consume t: 0 records")  # following the end: nothing printed yet
        with connect(daemon) as c:
            c.publish("t", b"one more")
        seen = read_terminal(main, until=b"consume t: 1 records")
        proc.send_signal(signal.SIGINT)  # it follows the topic until Ctrl-C
        seen += read_terminal(main)
        proc.wait(30)
    finally:
        os.close(main)
        proc.stdout.close()
    assert proc.returncode == 130
    assert re.search(rb"consumed 1 records in [\d.]+ s\r?\n", plain(seen)), seen


def test_no_live_line_over_lines_typed_at_the_terminal(daemon):
    assert mp("topics", "create", "typed", "-b", daemon).returncode == 0
    main, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "millpond.broker.cli", "produce", "typed", "-b", daemon],
                            stdin=terminal, stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    try:
        os.write(main, b"one\ntwo\n")
        with connect(daemon) as c:
            wait_for(lambda: c.list_offsets("typed", 0, "latest")[0] == 2)
        seen = read_terminal(main, timeout_s=1.5)  # three times the live line's refresh: it would have shown
        os.write(main, b"\x04")  # Ctrl-D
        seen += read_terminal(main)
        proc.wait(30)
    finally:
        os.close(main)
        proc.stdout.close()
    assert proc.returncode == 0
    text = plain(seen)
    assert re.search(rb"produced 2 records in [\d.]+ s", text) and b"produce typed:" not in text, text
