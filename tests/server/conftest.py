from __future__ import annotations

from pathlib import Path

import pytest
import trio

from serverkit import Harness, start_harness


@pytest.fixture
async def harness(nursery: trio.Nursery, tmp_path: Path) -> Harness:
    h = await start_harness(nursery, tmp_path / "data")
    yield h
    await h.broker.shutdown()
