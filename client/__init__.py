# The millpond Python client: async (Trio or asyncio, via anyio) in this package, blocking in `client.sync`.
# Public names only; speaks broker.wire and must never import millpond.broker.core or broker.server.
"""millpond client.

    from millpond.client import connect
    async with connect("127.0.0.1:7420", client_id="app") as c:
        await c.create_topic("logs", partitions=3)
        async with c.producer() as p:
            meta = await p.send("logs", b"hello", key=b"k")
        async with c.consumer("logs", auto_offset_reset="earliest") as cons:
            async for record in cons: ...

Delivery is at least once: a batch whose acknowledgement was lost with the connection is sent again, so a
partition may hold it twice (in order; never reordered).
"""
from millpond.broker.wire.batch import Record

from millpond.client import errors
from millpond.client._accumulator import RecordHandle
from millpond.client._client import DEFAULT_ADDRESS, Client, connect
from millpond.client.consumer import Consumer
from millpond.client.fanout import DeliveryPolicy, PartitionCursor, SubscriptionDescription, SubscriptionInfo
from millpond.client.limits import LimitPolicy, LimitStatistics
from millpond.client.producer import Producer
from millpond.client.queues import Queue, QueueInfo, QueueMessage, SendResult
from millpond.client.types import (
    BrokerLimits,
    GroupDescription,
    GroupListing,
    GroupMemberDescription,
    GroupPartitionOffsets,
    PartitionDescription,
    ProducerStatistics,
    RecordMetadata,
    TopicDescription,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "BrokerLimits",
    "GroupDescription",
    "GroupListing",
    "GroupMemberDescription",
    "GroupPartitionOffsets",
    "Client",
    "Consumer",
    "LimitPolicy",
    "LimitStatistics",
    "DeliveryPolicy",
    "PartitionCursor",
    "PartitionDescription",
    "Producer",
    "ProducerStatistics",
    "Queue",
    "QueueInfo",
    "QueueMessage",
    "Record",
    "RecordHandle",
    "RecordMetadata",
    "SendResult",
    "SubscriptionDescription",
    "SubscriptionInfo",
    "TopicDescription",
    "connect",
    "errors",
]
