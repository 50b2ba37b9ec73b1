# The daemon busy-polls only right after requests: once its clients go quiet it sleeps (its CPU time stops growing:
# a process polling for a whole second would spend close to a second, a sleeping one next to nothing; a real
# process, so real time). It takes busy_poll_s from its config file (0: off) and refuses one out of range.
from __future__ import annotations

import os
import time

import pytest

from millpond.client.sync import connect

from tests.daemonproc import start_daemon, stop_daemon

pytestmark = pytest.mark.slow


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _busy_then_quiet_cpu_s(address: str, pid: int) -> float:
    with connect(address) as c:
        c.create_topic("t")
        with c.producer(linger_s=0) as p:
            for i in range(300):
                p.send("t", b"%d" % i).result(10)  # one request at a time: the poll window opens each time
    time.sleep(0.3)  # past every window
    before = _cpu_s(pid)
    time.sleep(1.0)
    return _cpu_s(pid) - before


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_a_quiet_daemon_stops_polling(tmp_path):
    proc, port = start_daemon(tmp_path / "data", tmp_path / "broker.log")
    try:
        assert _busy_then_quiet_cpu_s(f"127.0.0.1:{port}", proc.pid) < 0.25
    finally:
        stop_daemon(proc)


def test_the_daemon_takes_busy_poll_s_from_its_config_file_and_refuses_one_out_of_range(tmp_path):
    config = tmp_path / "millpond.toml"
    config.write_text("busy_poll_s = 0\n")
    proc, port = start_daemon(tmp_path / "data", tmp_path / "broker.log", "--config", str(config))
    try:
        with connect(f"127.0.0.1:{port}") as c:
            c.create_topic("t")
            with c.producer() as p:
                assert p.send("t", b"x").result(10).offset == 0
    finally:
        stop_daemon(proc)
    bad = tmp_path / "bad.toml"
    bad.write_text("busy_poll_s = 5\n")
    with pytest.raises(RuntimeError, match="busy_poll_s must be 0-1 seconds"):
        start_daemon(tmp_path / "data2", tmp_path / "broker2.log", "--config", str(bad))
