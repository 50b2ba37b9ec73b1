# connect() is an async context manager; used any other way (called and used as the client, `with`, `await`) it
# says how to use it, and points a plain script at the blocking client, instead of an AttributeError about an
# _AsyncGeneratorContextManager.
from __future__ import annotations

import pytest
import trio

from millpond import connect
from millpond.client._client import MISUSE


def test_the_result_used_as_a_client_says_how_to_open_it():
    c = connect("127.0.0.1:1")
    with pytest.raises(AttributeError) as info:
        c.list_topics()
    assert str(info.value) == f"'list_topics': {MISUSE}"
    assert "async with connect(...) as c:" in MISUSE and "millpond.client.sync.connect" in MISUSE


def test_with_and_await_say_so_too():
    with pytest.raises(TypeError, match="async with connect"):
        with connect("127.0.0.1:1"):
            pass

    async def awaited() -> None:
        await connect("127.0.0.1:1")

    with pytest.raises(TypeError, match="async with connect"):
        trio.run(awaited)


async def test_async_with_opens_it(tmp_path):
    from millpond import open_broker

    async with open_broker(tmp_path / "d", fsync="never") as b:
        async with connect(b.address, client_id="ok") as c:
            assert await c.list_topics() == []
