# The pytest plugin users get with `pip install millpond`: a running broker and a connected client as fixtures.
from __future__ import annotations

import pytest


async def test_broker_and_client_fixtures_produce_and_consume(millpond_broker, millpond_client):
    b = millpond_broker
    assert b.host == "127.0.0.1" and b.port > 0 and b.address == f"127.0.0.1:{b.port}"
    await millpond_client.create_topic("orders", partitions=2)
    async with millpond_client.producer(linger_s=0) as producer:
        handle = producer.send("orders", b"order-1", key=b"customer-7")
        meta = await handle
    assert meta.offset == 0
    async with millpond_client.consumer("orders", auto_offset_reset="earliest") as consumer:
        records = []
        async for record in consumer:
            records.append(record)
            break
    assert [(r.key, r.value, r.partition) for r in records] == [(b"customer-7", b"order-1", meta.partition)]


@pytest.fixture
def millpond_config():
    return {"fsync": "always", "partitions_max": 4}


async def test_config_fixture_overrides_the_broker(millpond_broker):
    assert millpond_broker.config.fsync == "always"
    assert millpond_broker.config.partitions_max == 4
