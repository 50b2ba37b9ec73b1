# Fan-out on the client side (docs/fanout.md, docs/protocol.md "Fan-out"): the subscription records the broker
# answers with, the request bodies of subscribe and publish, and their parsing. Speaks only broker.wire; must not
# know the broker's internals.
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Mapping

from millpond.broker.wire.batch import encode_batch
from millpond.broker.wire.partitioner import partition_for_key


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """A topic's subscription: ``id`` (names it in ``unsubscribe`` and ``describe_subscription``), ``topic``,
    ``queue`` (its target), ``filter_policy`` (JSON text, None: every record), ``filter_policy_scope``
    (``"MessageAttributes"``: record headers, or ``"MessageBody"``: the JSON value), ``raw`` (SNS's raw message
    delivery), ``dead_letter_queue``, ``created_ms`` (wall-clock ms)."""

    id: str
    topic: str
    queue: str
    filter_policy: str | None
    filter_policy_scope: str
    raw: bool
    dead_letter_queue: str | None
    created_ms: int


@dataclass(frozen=True, slots=True)
class PartitionCursor:
    partition: int
    cursor: int  # the next offset the subscription looks at
    high_watermark: int
    lag: int  # records


@dataclass(frozen=True, slots=True)
class SubscriptionDescription:
    """A subscription with its cursors and counters (records): ``delivered`` into its queue, ``filtered_out``,
    ``failed`` (refused by its queue: ``dead_lettered`` into its dead-letter queue, or dropped without one); ``lag``
    records not yet looked at, ``lag_s`` seconds since the oldest of them was published, ``last_delivery_lag_s``
    publish to "in the queue" of the last record delivered (None before the first); ``paused``: its queue was full,
    delivery tries again shortly."""

    subscription: SubscriptionInfo
    partitions: tuple[PartitionCursor, ...]
    delivered: int
    filtered_out: int
    failed: int
    dead_lettered: int
    lag: int
    lag_s: float
    last_delivery_lag_s: float | None
    paused: bool


def subscribe_body(topic: str, queue: str, filter_policy: Mapping[str, Any] | str | None, filter_policy_scope: str,
                   raw: bool, dead_letter_queue: str | None, start: str | int) -> dict[str, Any]:
    """``filter_policy`` a dict (sent as its JSON text) or JSON text; ``start`` ``"end"``, ``"beginning"`` or a
    record timestamp in epoch ms (int). Raises ``TypeError`` for other types."""
    if filter_policy is not None and not isinstance(filter_policy, (str, Mapping)):
        raise TypeError(f"filter_policy must be a dict or JSON text, got {type(filter_policy).__name__}")
    if isinstance(start, bool) or not isinstance(start, (str, int)):
        raise TypeError(f"start must be 'end', 'beginning' or a timestamp in epoch ms (int), got {start!r}")
    body: dict[str, Any] = {"topic": topic, "queue": queue, "filter_policy_scope": filter_policy_scope, "raw": raw,
                            "start": start}
    if filter_policy is not None:
        body["filter_policy"] = filter_policy if isinstance(filter_policy, str) else json.dumps(dict(filter_policy))
    if dead_letter_queue is not None:
        body["dead_letter_queue"] = dead_letter_queue
    return body


def parse_info(b: Mapping[str, Any]) -> SubscriptionInfo:
    return SubscriptionInfo(str(b["id"]), str(b["topic"]), str(b["queue"]), b.get("filter_policy"),
                            str(b["filter_policy_scope"]), bool(b["raw"]), b.get("dead_letter_queue"),
                            int(b["created_ms"]))


def parse_description(b: Mapping[str, Any]) -> SubscriptionDescription:
    last = b.get("last_delivery_lag_ms")
    return SubscriptionDescription(
        parse_info(b["subscription"]),
        tuple(PartitionCursor(int(p["partition"]), int(p["cursor"]), int(p["high_watermark"]), int(p["lag"]))
              for p in b["partitions"]),
        int(b["delivered"]), int(b["filtered_out"]), int(b["failed"]), int(b["dead_lettered"]), int(b["lag"]),
        int(b["lag_ms"]) / 1000, None if last is None else int(last) / 1000, bool(b["paused"]))


def _bytes(what: str, v: bytes | str) -> bytes:
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"{what} must be bytes or str, got {type(v).__name__}")


def publish_body(topic: str, value: bytes | str, headers: Mapping[str, bytes | str] | None, key: bytes | str | None,
                 partitions: int, timestamp_ms: int) -> dict[str, Any]:
    """The produce request of one record: the partition from the key (as the producer: ``partition_for_key``) or
    a random one without a key; str values, keys and header values are sent as UTF-8."""
    k = None if key is None else _bytes("key", key)
    hs = [(str(n), _bytes(f"header {n!r}", v)) for n, v in (headers or {}).items()] or None
    partition = partition_for_key(k, partitions) if k is not None else random.randrange(partitions)
    return {"topic": topic, "partition": partition,
            "batch": encode_batch([(timestamp_ms, k, _bytes("value", value), hs)])}


__all__ = ["PartitionCursor", "SubscriptionDescription", "SubscriptionInfo", "parse_description", "parse_info",
           "publish_body", "subscribe_body"]
