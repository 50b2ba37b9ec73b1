# What one record becomes in a queue: the message ids (derived, so a delivery tried again carries the same ids),
# the body (SNS's JSON envelope, or the raw value with headers as message attributes) and a FIFO queue's message
# group (the record key). Pure: no clock, no I/O; must not know about cursors, queues' state or protocols.
from __future__ import annotations

import binascii
import hashlib
import json
import re
import uuid
from typing import Any, Callable

from millpond.broker.wire.batch import Record
from millpond.broker.wire.errors import InvalidParameterValueError

_NAMESPACE = uuid.UUID("6f1c2a4e-1d0b-5c7e-9a43-8e2f5b7d9c10")
_NAMESPACE_BYTES = _NAMESPACE.bytes
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 4122's variant bits over a hex digit
NO_KEY_GROUP = "millpond.no-key"  # the message group of records without a key, in a FIFO queue target
_GROUP = re.compile(r"[!-~]{1,128}")  # what a FIFO message group id may be (queues/attributes.py check_id)


def _uuid5(h: Any) -> str:
    """The text of RFC 4122's name-based UUID (version 5) whose SHA-1 ``h`` has taken the namespace and the name:
    ``uuid.uuid5``'s result, without its UUID object (a third of a delivery's cost)."""
    x = h.hexdigest()
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


def record_message_id(topic: str, partition: int, offset: int) -> str:
    """The id of one record as a published message: the envelope's ``MessageId`` (the same in every
    subscription's copy, as SNS). ``uuid.uuid5`` of a fixed namespace and ``topic NUL partition NUL offset``."""
    return _uuid5(hashlib.sha1(_NAMESPACE_BYTES + f"{topic}\x00{partition}\x00{offset}".encode()))


def delivery_message_id(subscription: str, topic: str, partition: int, offset: int) -> str:
    """The id of the queue message a subscription makes of one record: the same each time the delivery is tried,
    so a FIFO queue's deduplication and the queue's fan-out marks recognise it. ``uuid.uuid5`` of a fixed
    namespace and ``subscription NUL topic NUL partition NUL offset``."""
    return _uuid5(hashlib.sha1(_NAMESPACE_BYTES + f"{subscription}\x00{topic}\x00{partition}\x00{offset}".encode()))


def delivery_message_ids(subscription: str, topic: str, partition: int) -> Callable[[int], str]:
    """``delivery_message_id(subscription, topic, partition, offset)`` as a function of the offset, the hash of
    the common part taken once."""
    base = hashlib.sha1(_NAMESPACE_BYTES + f"{subscription}\x00{topic}\x00{partition}\x00".encode())
    copy = base.copy

    def ids(offset: int) -> str:
        h = copy()
        h.update(b"%d" % offset)
        return _uuid5(h)

    return ids


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


def _by_name(headers: Any) -> dict[str, list[bytes]]:
    """Header name -> its values in record order (a dict of headers, or the list of pairs with repeated names
    that fan-out reads); headers without a value are left out, as is a name with none."""
    if not headers:
        return {}
    out: dict[str, list[bytes]] = {}
    for name, value in (headers.items() if isinstance(headers, dict) else headers):
        if value is None:
            continue
        values = out.get(name)
        if values is None:
            out[name] = [bytes(value)]
        else:
            values.append(bytes(value))
    return out


def _array(values: list[bytes]) -> tuple[str, bool]:
    """``(JSON array text, is_base64)`` of a repeated header's values in order (SNS's String.Array value): the
    values as text when all are UTF-8, else all in base64."""
    texts = []
    for value in values:
        try:
            texts.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            texts = [binascii.b2a_base64(v, newline=False).decode("ascii") for v in values]
            return json.dumps(texts, separators=(",", ":")), True
    return json.dumps(texts, separators=(",", ":"), ensure_ascii=False), False


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
    ``KeyEncoding`` ``"base64"`` when the bytes are not UTF-8; a header without a value is left out. A header name
    the record carries more than once (Kafka allows it) is one attribute of type ``String.Array`` whose value is
    the JSON array text of its values in order (SNS's type for an array attribute), or ``Binary.Array`` (millpond's
    own: SNS has no binary arrays) with every value in base64 when one of them is not UTF-8."""
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
    for name, values in _by_name(record.headers).items():
        if len(values) == 1:
            text, b64 = _text(values[0])
            attributes[name] = {"Type": "Binary" if b64 else "String", "Value": text}
        else:
            texts, b64 = _array(values)
            attributes[name] = {"Type": "Binary.Array" if b64 else "String.Array", "Value": texts}
    if attributes:
        out["MessageAttributes"] = attributes
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()


def raw_message(record: Record) -> tuple[bytes, dict[str, Any]]:
    """Raw delivery (SNS RawMessageDelivery to SQS): the body is the record value, each header a message attribute
    (UTF-8 text as a string, other bytes as bytes). A name the record carries more than once is one attribute
    holding the JSON array text of its values in order (an SNS ``String.Array`` attribute's value): a string, or
    when a value is not UTF-8 the bytes of that array with every value in base64. Raises
    ``InvalidParameterValueError`` for a record without a value (a queue message needs a body); the queue refuses
    attributes it cannot hold (more than 10, bad names)."""
    if not record.value:
        raise InvalidParameterValueError(
            f"record {record.topic}/{record.partition}@{record.offset} has no value: a raw delivery needs a body",
            parameter="value")
    headers = record.headers
    if not headers:
        return bytes(record.value), {}
    attributes: dict[str, Any] = {}
    for name, values in _by_name(headers).items():
        if len(values) == 1:
            text, b64 = _text(values[0])
            attributes[name] = values[0] if b64 else text
        else:
            texts, b64 = _array(values)
            attributes[name] = texts.encode() if b64 else texts
    return bytes(record.value), attributes


__all__ = ["NO_KEY_GROUP", "delivery_message_id", "delivery_message_ids", "envelope", "group_id", "iso_timestamp", "raw_message",
           "record_message_id"]
