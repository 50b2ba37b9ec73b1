# Fixtures for client tests: a broker running as a subprocess (for asyncio and blocking-client tests, which must
# not share a Trio run with it) and an in-process Trio broker for the Trio tests (pytest-trio).
from __future__ import annotations

import selectors
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest

START_TIMEOUT_S = 20


def start_daemon(data_dir: Path, log: Path) -> tuple[subprocess.Popen, int]:
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "serve", "--data-dir", str(data_dir), "--port",
                                 "0", "--fsync", "never"], stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:  # bounded wait for a real process
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(START_TIMEOUT_S)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("millpond listening on "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"daemon did not start: {line!r} {log.read_text()}")
    return proc, int(line.rsplit(":", 1)[1])


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """``"127.0.0.1:PORT"`` of a broker subprocess, stopped afterwards."""
    proc, port = start_daemon(tmp_path / "data", tmp_path / "daemon.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture
async def broker() -> AsyncIterator[Any]:
    from broker.server.embedded import open_broker

    async with open_broker(None, fsync="never") as b:
        yield b


@pytest.fixture
async def client(broker: Any) -> AsyncIterator[Any]:
    from client import connect

    async with connect(broker.address, client_id="test") as c:
        yield c
