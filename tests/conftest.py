# Fixtures every test folder can use: a broker running as a subprocess (`daemon`), for asyncio and
# blocking-client tests that must not share a Trio run with it, and for the CLI tests.
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.daemonproc import start_daemon, stop_daemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """``"127.0.0.1:PORT"`` of a broker subprocess, stopped afterwards."""
    proc, port = start_daemon(tmp_path / "data", tmp_path / "daemon.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_daemon(proc)
