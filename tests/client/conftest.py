# Fixtures for client tests: an in-process Trio broker for the Trio tests (pytest-trio); the broker subprocess
# fixture `daemon` comes from tests/conftest.py.
from __future__ import annotations

from typing import Any, AsyncIterator

import pytest


@pytest.fixture
async def broker() -> AsyncIterator[Any]:
    from millpond.broker.server.embedded import open_broker

    async with open_broker(None, fsync="never") as b:
        yield b


@pytest.fixture
async def client(broker: Any) -> AsyncIterator[Any]:
    from millpond.client import connect

    async with connect(broker.address, client_id="test") as c:
        yield c
