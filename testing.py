# The pytest plugin (registered by the `pytest11` entry point): a running broker and a connected client as
# fixtures, for users testing their own code against millpond. Needs pytest-trio for the async fixtures.
from __future__ import annotations

from typing import Any, AsyncIterator

import pytest


@pytest.fixture
def millpond_config() -> dict[str, Any]:
    """Overrides for the test broker (``BrokerConfig`` fields). Override this fixture to change them; the default
    is ``fsync="never"``: tests want speed, not durability."""
    return {"fsync": "never"}


@pytest.fixture
async def millpond_broker(millpond_config: dict[str, Any]) -> AsyncIterator[Any]:
    """A broker on a free loopback port with a temporary data directory, removed afterwards. ``.address`` is
    ``"HOST:PORT"`` (``.host``, ``.port``: its parts). Trio tests only (pytest-trio)."""
    from millpond.broker.server.embedded import open_broker

    async with open_broker(None, **millpond_config) as b:
        yield b


@pytest.fixture
async def millpond_client(millpond_broker: Any) -> AsyncIterator[Any]:
    """An async ``client.Client`` connected to ``millpond_broker``."""
    from millpond.client import connect

    async with connect(millpond_broker.address, client_id="pytest") as c:
        yield c
