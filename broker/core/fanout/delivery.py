# What one record becomes in a queue: the message ids (derived, so a delivery tried again carries the same ids),
# the body (SNS's JSON envelope, or the raw value with headers as message attributes) and a FIFO queue's message
# group (the record key). Pure: no clock, no I/O; must not know about cursors, queues' state or protocols.
from __future__ import annotations

import binascii
import hashlib
import json
import re
import uuid
from typing import Any

from millpond.broker.wire.batch import Record
from millpond.broker.wire.errors import InvalidParameterValueError

_NAMESPACE = uuid.UUID("6f1c2a4e-1d0b-5c7e-9a43-8e2f5b7d9c10")
NO_KEY_GROUP = "millpond.no-key"  # the message group of records without a key, in a FIFO queue target
_GROUP = re.compile(r"[!-~]{1,128}")  # what a FIFO message group id may be (queues/attributes.py check_id)


def record_message_id(topic: str, partition: int, offset: int) -> str:
    """The id of one record as a published message: the envelope's ``MessageId`` (the same in every
    subscription's copy, as SNS)."""
    return str(uuid.uuid5(_NAMESPACE, f"{topic}\x00{partition}\x00{offset}"))


def delivery_message_id(subscription: str, topic: str, partition: int, offset: int) -> str:
    """The id of the queue message a subscription makes of one record: the same each time the delivery is tried,
    so a FIFO queue's deduplication and the queue's fan-out marks recognise it."""
    return str(uuid.uuid5(_NAMESPACE, f"{subscription}\x00{topic}\x00{partition}\x00{offset}"))


def group_id(key: bytes | None) -> str:
    """A FIFO queue target's message group for a record: its key as text when the key is 1-128 printable ASCII
    characters (an SQS group id), else ``sha256:`` and the key's SHA-256 in hex; ``NO_KEY_GROUP`` without a key
    (every keyless record in one group: their order holds too)."""
    if key is None:
        return NO_KEY_GROUP
    try:
        text = key.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    return text if _GROUP.fullmatch(text) else "sha256:" + hashlib.sha256(key).hexdigest()


def _text(data: bytes) -> tuple[str, bool]:
    """``(text, is_base64)``: UTF-8 text as it is, other bytes in base64."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return binascii.b2a_base64(data, newline=False).decode("ascii"), True


def iso_timestamp(ms: int) -> str:
    """``2026-12-01T17:28:38.123Z`` (SNS's Timestamp format) of wall-clock ms since the epoch."""
    days, rest = divmod(ms, 86_400_000)
    # the proleptic Gregorian date of a day number (H. Hinnant's days_from_civil inverse; no clock module needed)
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    seconds, milli = divmod(rest, 1000)
    return (f"{year:04d}-{month:02d}-{day:02d}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}."
            f"{milli:03d}Z")


def envelope(record: Record, subscription: str) -> bytes:
    """SNS's notification envelope (Type, MessageId, Message, Timestamp, MessageAttributes with String and Binary
    values as SNS writes them) with the record's place in the log instead of TopicArn: Topic, Partition, Offset,
    Key, and SubscriptionId. ``Message`` and ``Key`` are UTF-8 text, or base64 with ``MessageEncoding`` /
    ``KeyEncoding`` ``"base64"`` when the bytes are not UTF-8; a header without a value is left out."""
    out: dict[str, Any] = {"Type": "Notification",
                           "MessageId": record_message_id(record.topic, record.partition, record.offset),
                           "Topic": record.topic, "Partition": record.partition, "Offset": record.offset,
                           "SubscriptionId": subscription}
    if record.key is None:
        out["Key"] = None
    else:
        out["Key"], b64 = _text(record.key)
        if b64:
            out["KeyEncoding"] = "base64"
    out["Message"], b64 = _text(record.value or b"")
    if b64:
        out["MessageEncoding"] = "base64"
    out["Timestamp"] = iso_timestamp(record.timestamp_ms)
    attributes = {}
    for name, value in (record.headers or {}).items():
        if value is None:
            continue
        text, b64 = _text(bytes(value))
        attributes[name] = {"Type": "Binary" if b64 else "String", "Value": text}
    if attributes:
        out["MessageAttributes"] = attributes
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()


def raw_message(record: Record) -> tuple[bytes, dict[str, Any]]:
    """Raw delivery (SNS RawMessageDelivery to SQS): the body is the record value, each header a message attribute
    (UTF-8 text as a string, other bytes as bytes). Raises ``InvalidParameterValueError`` for a record without a
    value (a queue message needs a body); the queue refuses attributes it cannot hold (more than 10, bad names)."""
    if not record.value:
        raise InvalidParameterValueError(
            f"record {record.topic}/{record.partition}@{record.offset} has no value: a raw delivery needs a body",
            parameter="value")
    attributes: dict[str, Any] = {}
    for name, value in (record.headers or {}).items():
        if value is None:
            continue
        text, b64 = _text(bytes(value))
        attributes[name] = bytes(value) if b64 else text
    return bytes(record.value), attributes


__all__ = ["NO_KEY_GROUP", "delivery_message_id", "envelope", "group_id", "iso_timestamp", "raw_message",
           "record_message_id"]
