# A queue's attributes and the validation of everything a caller names: queue names, attribute ranges (SQS's
# numbers, docs: ../shared/reference/sqs_sns.md section 1.1), message attributes, group and deduplication ids,
# batch entry ids. Pure values and checks; must not know about messages in flight, storage, clocks or any protocol.
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from millpond.broker.wire.errors import InvalidConfigError, InvalidParameterValueError, InvalidQueueNameError

FIFO_SUFFIX = ".fifo"
QUEUE_NAME_CHARS_MAX = 80  # as SQS CreateQueue.QueueName, the .fifo suffix counted
VISIBILITY_TIMEOUT_S_MAX = 43_200.0  # 12 h, as SQS VisibilityTimeout
DELAY_S_MAX = 900.0  # 15 min, as SQS DelaySeconds
RETENTION_S_MIN, RETENTION_S_MAX = 60.0, 1_209_600.0  # 1 min .. 14 d, as SQS MessageRetentionPeriod
MESSAGE_BYTES_MIN, MESSAGE_BYTES_MAX = 1024, 1_048_576  # as SQS MaximumMessageSize (1 MiB since 2025)
RECEIVE_WAIT_S_MAX = 20.0  # as SQS ReceiveMessageWaitTimeSeconds / WaitTimeSeconds
MAX_RECEIVE_COUNT_MIN, MAX_RECEIVE_COUNT_MAX = 1, 1000  # as SQS RedrivePolicy.maxReceiveCount
DEDUP_WINDOW_S = 300.0  # 5 min, as SQS MessageDeduplicationId
ATTRIBUTES_PER_MESSAGE_MAX = 10  # as SQS message attributes
ATTRIBUTE_NAME_CHARS_MAX = 256
ID_CHARS_MAX = 128  # group ids and deduplication ids, as SQS MessageGroupId / MessageDeduplicationId
BATCH_ENTRIES_MAX = 1000  # a send, delete or visibility batch's entries (SQS: 10; docs/queues.md)
BATCH_ENTRY_ID_CHARS_MAX = 80
BATCH_BYTES_MAX = 1_048_576  # a send batch's bodies and attributes together, as SQS SendMessageBatch

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_ID = re.compile(r"[!-~]+")  # alphanumerics and punctuation, as SQS MessageGroupId
_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class QueueAttributes:
    """A queue's settable attributes, seconds and bytes, with SQS's defaults. ``dead_letter_queue`` and
    ``max_receive_count`` are SQS's RedrivePolicy (a queue name instead of an ARN), set together or not at all."""

    visibility_timeout_s: float = 30.0
    delay_s: float = 0.0
    retention_s: float = 345_600.0
    message_bytes_max: int = MESSAGE_BYTES_MAX
    receive_wait_s: float = 0.0
    dead_letter_queue: str | None = None
    max_receive_count: int | None = None
    fifo: bool = False
    content_based_deduplication: bool = False

    def to_record(self) -> dict[str, Any]:
        """As plain values (the journal's form)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "QueueAttributes":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


SETTABLE = tuple(f.name for f in dataclasses.fields(QueueAttributes) if f.name != "fifo")


def check_queue_name(name: object) -> str:
    """``name`` if it is a valid queue name, as SQS CreateQueue.QueueName: 1-80 characters of ``[A-Za-z0-9_-]``,
    plus ``.fifo`` at the end of a FIFO queue's name. Raises ``InvalidQueueNameError``."""
    if not isinstance(name, str) or not name:
        raise InvalidQueueNameError(f"a queue name must be a non-empty string, got {name!r}")
    stem = name[: -len(FIFO_SUFFIX)] if name.endswith(FIFO_SUFFIX) else name
    if len(name) > QUEUE_NAME_CHARS_MAX or not _NAME.fullmatch(stem):
        raise InvalidQueueNameError(
            f"queue name {name[:100]!r} must be 1-{QUEUE_NAME_CHARS_MAX} characters of [A-Za-z0-9_-] (a FIFO "
            f"queue's ending in '.fifo')", queue=name[:100])
    return name


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise InvalidConfigError(f"queue attribute {name} must be between {_number(low)} and {_number(high)}, got "
                                 f"{_number(value)}", attribute=name)


def _number(x: float) -> str:
    """A limit as people write it: whole numbers in full (1048576, not 1.04858e+06)."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def check_attributes(name: str, attrs: QueueAttributes) -> QueueAttributes:
    """``attrs`` if they are valid for queue ``name``, as SQS CreateQueue.Attributes: the ranges above; a FIFO
    queue is one whose name ends in ``.fifo`` (``fifo`` must agree); content-based deduplication only on FIFO
    queues; a redrive policy names a dead-letter queue and a max receive count together. Whether the dead-letter
    queue exists is the caller's check. Raises ``InvalidConfigError``."""
    _in_range("visibility_timeout_s", attrs.visibility_timeout_s, 0, VISIBILITY_TIMEOUT_S_MAX)
    _in_range("delay_s", attrs.delay_s, 0, DELAY_S_MAX)
    _in_range("retention_s", attrs.retention_s, RETENTION_S_MIN, RETENTION_S_MAX)
    _in_range("message_bytes_max", attrs.message_bytes_max, MESSAGE_BYTES_MIN, MESSAGE_BYTES_MAX)
    _in_range("receive_wait_s", attrs.receive_wait_s, 0, RECEIVE_WAIT_S_MAX)
    if attrs.fifo != name.endswith(FIFO_SUFFIX):
        raise InvalidConfigError(f"queue {name!r}: a FIFO queue's name ends in '.fifo' and only a FIFO queue's "
                                 f"does (fifo={attrs.fifo})", attribute="fifo")
    if attrs.content_based_deduplication and not attrs.fifo:
        raise InvalidConfigError("content_based_deduplication applies only to FIFO queues",
                                 attribute="content_based_deduplication")
    if (attrs.dead_letter_queue is None) != (attrs.max_receive_count is None):
        raise InvalidConfigError("a redrive policy needs both dead_letter_queue and max_receive_count",
                                 attribute="dead_letter_queue")
    if attrs.max_receive_count is not None:
        _in_range("max_receive_count", attrs.max_receive_count, MAX_RECEIVE_COUNT_MIN, MAX_RECEIVE_COUNT_MAX)
    if attrs.dead_letter_queue is not None:
        check_queue_name(attrs.dead_letter_queue)
        if attrs.dead_letter_queue == name:
            raise InvalidConfigError(f"queue {name!r} cannot be its own dead-letter queue",
                                     attribute="dead_letter_queue")
    return attrs


def check_seconds(parameter: str, value: float, high: float) -> float:
    """``value`` if within 0..``high`` seconds. Raises ``InvalidParameterValueError`` naming ``parameter``, as SQS
    does for an out-of-range DelaySeconds, WaitTimeSeconds or VisibilityTimeout."""
    if not 0 <= value <= high:
        raise InvalidParameterValueError(
            f"value {value:g} for parameter {parameter} is invalid: must be between 0 and {high:g}",
            parameter=parameter)
    return value


def check_id(parameter: str, value: str) -> str:
    """A group id or deduplication id: 1-128 characters of alphanumerics and punctuation (as SQS)."""
    if not value or len(value) > ID_CHARS_MAX or not _ID.fullmatch(value):
        raise InvalidParameterValueError(
            f"{parameter} must be 1-{ID_CHARS_MAX} characters of letters, digits and punctuation, got "
            f"{value[:140]!r}", parameter=parameter)
    return value


def check_entry_id(value: str) -> str:
    """A batch entry id: 1-80 characters of ``[A-Za-z0-9_-]`` (as SQS InvalidBatchEntryId)."""
    if len(value) > BATCH_ENTRY_ID_CHARS_MAX or not _ENTRY_ID.fullmatch(value):
        raise InvalidParameterValueError(
            f"batch entry id {value[:100]!r} must be 1-{BATCH_ENTRY_ID_CHARS_MAX} characters of [A-Za-z0-9_-]",
            parameter="id")
    return value


def message_size(body: bytes, attributes: dict[str, Any]) -> int:
    """Bytes a message counts against ``message_bytes_max``: its body, plus each attribute's name and value (as
    SQS, where attributes count against the size; a number counts as its decimal text)."""
    size = len(body)
    for name, value in attributes.items():
        size += len(name.encode())
        size += len(value) if isinstance(value, bytes) else len(str(value).encode())
    return size


def check_message_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """At most 10 attributes, names of 1-256 characters of ``[A-Za-z0-9_.-]`` without a leading, trailing or
    doubled period and not starting ``AWS.`` or ``Amazon.``; values strings, numbers or bytes (as SQS's String,
    Number and Binary). Raises ``InvalidParameterValueError``."""
    if len(attributes) > ATTRIBUTES_PER_MESSAGE_MAX:
        raise InvalidParameterValueError(
            f"a message has at most {ATTRIBUTES_PER_MESSAGE_MAX} attributes, got {len(attributes)}",
            parameter="attributes")
    for name, value in attributes.items():
        if (not isinstance(name, str) or len(name) > ATTRIBUTE_NAME_CHARS_MAX or not _ATTRIBUTE_NAME.fullmatch(name)
                or name.startswith(".") or name.endswith(".") or ".." in name
                or name.lower().startswith(("aws.", "amazon."))):
            raise InvalidParameterValueError(
                f"message attribute name {str(name)[:100]!r} must be 1-{ATTRIBUTE_NAME_CHARS_MAX} characters of "
                "[A-Za-z0-9_.-], without a leading, trailing or doubled period, not starting 'AWS.' or 'Amazon.'",
                parameter="attributes")
        if type(value) not in (str, int, float, bytes):
            raise InvalidParameterValueError(
                f"message attribute {name!r} must be a string, a number or bytes, got {type(value).__name__}",
                parameter="attributes")
    return attributes


__all__ = [
    "BATCH_BYTES_MAX", "BATCH_ENTRIES_MAX", "DEDUP_WINDOW_S", "DELAY_S_MAX", "FIFO_SUFFIX", "QueueAttributes",
    "RECEIVE_WAIT_S_MAX", "SETTABLE", "VISIBILITY_TIMEOUT_S_MAX", "check_attributes", "check_entry_id", "check_id",
    "check_message_attributes", "check_queue_name", "check_seconds", "message_size",
]
