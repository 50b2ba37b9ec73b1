# Fixtures for the partition log tests. No sockets, no sleeps, literal times.
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helpers live in logkit.py next to this file; make it importable under any pytest import mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from logkit import LogEnv  # noqa: E402


@pytest.fixture
def env(tmp_path: Path):
    e = LogEnv(tmp_path / "data")
    yield e
    e.close_all()
