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
class DeliveryPolicy:
    """A webhook subscription's delivery policy (SNS's HTTP/S DeliveryPolicy): ``attempts_max`` requests per record
    (the first included), retries ``min_delay_s`` doubling up to ``max_delay_s`` apart (less up to ``jitter`` of
    it), none starting more than ``total_s`` after the first attempt, ``timeout_s`` per request,
    ``concurrency_max`` requests in flight, ``rate_per_second`` requests started per second at most (None: no
    limit)."""

    attempts_max: int
    min_delay_s: float
    max_delay_s: float
    total_s: float
    timeout_s: float
    concurrency_max: int
    rate_per_second: float | None
    jitter: float


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """A topic's subscription: ``id`` (names it in ``unsubscribe`` and ``describe_subscription``), ``topic``,
    ``queue`` (its target queue, or None for a webhook), ``filter_policy`` (JSON text, None: every record),
    ``filter_policy_scope`` (``"MessageAttributes"``: record headers, or ``"MessageBody"``: the JSON value),
    ``raw`` (SNS's raw message delivery), ``dead_letter_queue``, ``created_s`` (wall-clock epoch seconds, float);
    a webhook's ``url`` and ``delivery`` policy (None for a queue)."""

    id: str
    topic: str
    queue: str | None
    filter_policy: str | None
    filter_policy_scope: str
    raw: bool
    dead_letter_queue: str | None
    created_s: float
    url: str | None = None
    delivery: DeliveryPolicy | None = None


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


def subscribe_body(topic: str, queue: str | None, filter_policy: Mapping[str, Any] | str | None,
                   filter_policy_scope: str, raw: bool, dead_letter_queue: str | None, start: str | int,
                   url: str | None = None, delivery: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``filter_policy`` a dict (sent as its JSON text) or JSON text; ``start`` ``"end"``, ``"beginning"`` or a
    record timestamp in epoch ms (int); ``delivery``: a webhook's policy fields given (None values left out;
    ``x_s`` seconds sent as ``x_ms``). Raises ``TypeError`` for other types."""
    if filter_policy is not None and not isinstance(filter_policy, (str, Mapping)):
        raise TypeError(f"filter_policy must be a dict or JSON text, got {type(filter_policy).__name__}")
    if isinstance(start, bool) or not isinstance(start, (str, int)):
        raise TypeError(f"start must be 'end', 'beginning' or a timestamp in epoch ms (int), got {start!r}")
    body: dict[str, Any] = {"topic": topic, "filter_policy_scope": filter_policy_scope, "raw": raw, "start": start}
    if queue is not None:
        body["queue"] = queue
    if url is not None:
        body["url"] = url
    for name, value in (delivery or {}).items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {value!r}")
        if name.endswith("_s"):
            body[name[:-2] + "_ms"] = round(value * 1000)
        else:
            body[name] = value
    if filter_policy is not None:
        body["filter_policy"] = filter_policy if isinstance(filter_policy, str) else json.dumps(dict(filter_policy))
    if dead_letter_queue is not None:
        body["dead_letter_queue"] = dead_letter_queue
    return body


def parse_info(b: Mapping[str, Any]) -> SubscriptionInfo:
    d = b.get("delivery")
    delivery = None if d is None else DeliveryPolicy(
        int(d["attempts_max"]), int(d["min_delay_ms"]) / 1000, int(d["max_delay_ms"]) / 1000,
        int(d["total_ms"]) / 1000, int(d["timeout_ms"]) / 1000, int(d["concurrency_max"]), d.get("rate_per_second"),
        float(d["jitter"]))
    queue = b.get("queue")
    return SubscriptionInfo(str(b["id"]), str(b["topic"]), None if queue is None else str(queue),
                            b.get("filter_policy"), str(b["filter_policy_scope"]), bool(b["raw"]),
                            b.get("dead_letter_queue"), int(b["created_ms"]) / 1000, b.get("url"), delivery)


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


__all__ = ["DeliveryPolicy", "PartitionCursor", "SubscriptionDescription", "SubscriptionInfo", "parse_description",
           "parse_info", "publish_body", "subscribe_body"]
