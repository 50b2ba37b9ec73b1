# Fixtures for the partition log tests. No sockets, no sleeps, literal times. ``env``: file storage (tests of the
# file store's own files and recovery); ``anyenv``: every storage (the contract suite).
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import NamedTuple

import pytest

# The helpers live in logkit.py next to this file; make it importable under any pytest import mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from logkit import STORAGES, LogEnv  # noqa: E402


class FsyncCall(NamedTuple):
    kind: str  # "fsync" or "fdatasync"
    fd: int
    thread: str  # the name of the thread that made it


@pytest.fixture
def env(tmp_path: Path):
    e = LogEnv(tmp_path / "data")
    yield e
    e.close_all()


@pytest.fixture(params=STORAGES)
def anyenv(request, tmp_path: Path):
    e = LogEnv(tmp_path / "data", request.param)
    yield e
    e.close_all()


@pytest.fixture
def fsyncs(monkeypatch):
    """Every os.fsync/os.fdatasync call, as an ``FsyncCall``."""
    calls: list[FsyncCall] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def counted(fd, real=real, name=name):
            calls.append(FsyncCall(name, fd, threading.current_thread().name))
            return real(fd)

        monkeypatch.setattr(os, name, counted)
    return calls
