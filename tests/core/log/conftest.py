# Fixtures for the partition log tests. No sockets, no sleeps, literal times. ``env``: file storage (tests of the
# file store's own files and recovery); ``anyenv``: every storage (the contract suite).
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helpers live in logkit.py next to this file; make it importable under any pytest import mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from logkit import STORAGES, LogEnv  # noqa: E402


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
