# `millpond worker` as a user runs it: subprocesses against a broker subprocess. The worker is stopped with
# SIGTERM in the middle of a batch: nothing is lost (each message handled once and deleted, or back in the queue at
# once), and it exits 0; past its grace it releases at once; on a terminal it draws a live line.
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from millpond.client.sync import connect

pytestmark = pytest.mark.slow

HANDLERS = '''
import os, time

def handle(batch):  # Lambda's shape: a list of messages; writes what it handled once it is done
    with open(os.environ["JOBS_LOG"], "a") as f:
        f.write("start %d\\n" % len(batch))
    time.sleep(float(os.environ["JOBS_SLEEP_S"]))
    with open(os.environ["JOBS_LOG"], "a") as f:
        f.writelines(m.body.decode() + "\\n" for m in batch)

async def each(message):  # one message at a time; "bad" ones fail
    if message.body.startswith(b"bad"):
        raise ValueError("bad message")
'''



def wait_for(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def start_worker(tmp_path: Path, daemon: str, *args: str, sleep_s: float = 0.5) -> subprocess.Popen:
    (tmp_path / "jobs.py").write_text(HANDLERS)
    env = {**os.environ, "JOBS_LOG": str(tmp_path / "jobs.log"), "JOBS_SLEEP_S": str(sleep_s)}
    return subprocess.Popen([sys.executable, "-m", "millpond.broker.cli", "worker", *args, "--broker", daemon],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def log_lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "jobs.log"
    return path.read_text().splitlines() if path.exists() else []


def test_worker_stops_on_sigterm_mid_batch_and_loses_nothing(tmp_path, daemon):
    bodies = [f"job-{i}" for i in range(60)]
    with connect(daemon) as c:
        c.create_queue("jobs", visibility_timeout_s=60.0)
        q = c.queue("jobs")
        for i in range(0, 60, 10):
            q.send_batch([b.encode() for b in bodies[i:i + 10]])
    proc = start_worker(tmp_path, daemon, "jobs:handle", "--queue", "jobs", "--batch-size", "10",
                        "--concurrency", "2", "--wait-s", "1", "--progress-interval-s", "0.2")
    try:
        wait_for(lambda: sum(line.startswith("start") for line in log_lines(tmp_path)) >= 3)
        proc.send_signal(signal.SIGTERM)  # batches are running: they finish, what is held is released
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    handled = [line for line in log_lines(tmp_path) if not line.startswith("start")]
    starts = [int(line.split()[1]) for line in log_lines(tmp_path) if line.startswith("start")]
    assert len(handled) == len(set(handled)) == sum(starts)  # every batch begun was finished, each message once
    assert 30 <= len(handled) < 60
    with connect(daemon) as c:
        info = c.queue_attributes("jobs")
        assert (info.messages_in_flight, info.messages_visible) == (0, 60 - len(handled))  # released, not hidden
        rest = [m.body.decode() for m in c.queue("jobs").receive(100, wait_s=0.0)]
    assert sorted(rest + handled) == sorted(bodies)
    text = err.decode()
    assert re.search(r"^worker on jobs: processed \d+  failed 0  in flight \d+  rate [\d.]+/s$", text, re.M), text
    final = text.strip().splitlines()[-1]
    assert re.fullmatch(rf"worker on jobs: processed {len(handled)}  failed 0  in flight 0  rate [\d.]+/s  "
                        r"released \d+  \(stopped\)", final), final


def test_worker_past_its_grace_releases_at_once_and_counts_failures(tmp_path, daemon):
    with connect(daemon) as c:
        c.create_queue("slow", visibility_timeout_s=600.0)
        c.queue("slow").send_batch([b"s-%d" % i for i in range(5)])
        c.create_queue("mixed", visibility_timeout_s=600.0)
        c.queue("mixed").send_batch([b"ok-1", b"bad-1", b"ok-2"])
    proc = start_worker(tmp_path, daemon, "jobs:handle", "--queue", "slow", "--shutdown-grace-s", "0.2",
                        sleep_s=60.0)
    try:
        wait_for(lambda: log_lines(tmp_path) == ["start 5"])
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - started < 15  # not the handler's 60 s, nor the messages' 600 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert err.decode().strip().endswith("released 5  (stopped)"), err
    with connect(daemon) as c:
        info = c.queue_attributes("slow")
        assert (info.messages_visible, info.messages_in_flight) == (5, 0)

    proc = start_worker(tmp_path, daemon, "jobs:each", "--queue", "mixed", "--per-message", "--wait-s", "0.5",
                        "--progress-interval-s", "0.1")
    try:
        with connect(daemon) as c:
            wait_for(lambda: c.queue_attributes("mixed").messages_in_flight == 1
                     and c.queue_attributes("mixed").messages_visible == 0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert re.search(r"worker on mixed: processed 2  failed 1  in flight 0  rate [\d.]+/s  released 0  \(stopped\)$",
                     err.decode().strip()), err
    with connect(daemon) as c:  # the failure comes back after its visibility timeout (as Lambda), not at once
        info = c.queue_attributes("mixed")
        assert (info.messages_visible, info.messages_in_flight) == (0, 1)


def test_worker_handler_errors_are_one_line(tmp_path, daemon):
    (tmp_path / "jobs.py").write_text(HANDLERS)
    for spec, message in (("jobs", b"the handler must be MODULE:FUNCTION (e.g. shop.jobs:handle), not 'jobs'"),
                          ("nosuch:handle", b"cannot import 'nosuch': ModuleNotFoundError: No module named 'nosuch'"),
                          ("jobs:missing", b"'jobs' has no attribute 'missing'"),
                          ("jobs:os", b"jobs:os is not callable (a module)")):
        r = subprocess.run([sys.executable, "-m", "millpond.broker.cli", "worker", spec, "--queue", "q",
                            "--broker", daemon], cwd=tmp_path, capture_output=True, timeout=60)
        assert (r.returncode, r.stderr) == (2, b"millpond worker: " + message + b"\n")
    r = subprocess.run([sys.executable, "-m", "millpond.broker.cli", "worker", "jobs:handle", "--queue", "nope",
                        "--broker", daemon], cwd=tmp_path, capture_output=True, timeout=60)
    assert (r.returncode, r.stderr) == (1, b"millpond worker: UNKNOWN_QUEUE: queue 'nope' does not exist\n")


def test_worker_on_a_terminal_draws_a_live_line(tmp_path, daemon):
    import pty

    with connect(daemon) as c:
        c.create_queue("tty")
        c.queue("tty").send_batch([b"t-%d" % i for i in range(10)])
    (tmp_path / "jobs.py").write_text(HANDLERS)
    main, terminal = pty.openpty()
    env = {**os.environ, "JOBS_LOG": str(tmp_path / "jobs.log"), "JOBS_SLEEP_S": "0", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "millpond.broker.cli", "worker", "jobs:handle", "--queue", "tty",
                             "--wait-s", "0.5", "--broker", daemon], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=terminal)
    os.close(terminal)
    seen = b""
    try:
        with connect(daemon) as c:
            wait_for(lambda: c.queue_attributes("tty").messages_visible == 0
                     and c.queue_attributes("tty").messages_in_flight == 0)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == 0
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", seen).decode()  # without the terminal's escape sequences
    assert "\r" in text  # redrawn in place, not a line per update
    assert re.search(r"worker on tty: processed 10  failed 0  in flight 0  rate [\d.]+/s  released 0  \(stopped\)",
                     text), text
