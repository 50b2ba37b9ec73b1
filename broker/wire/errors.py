# The one error table: stable numeric codes, names, retriable flags, and one exception class per code.
# Shared by the broker (which raises these in its cores and answers them on the wire) and the client (which
# raises the class matching a code it receives). Must not know about sockets, trio or storage.
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class ErrorKind:
    code: int
    name: str
    retriable: bool
    doc: str


class MillpondError(Exception):
    """Base class of every error the broker answers with a code.

    ``details`` carries machine-readable context (e.g. ``log_start_offset`` for OFFSET_OUT_OF_RANGE); it travels
    on the wire as a msgpack map next to the message.
    """

    code: ClassVar[int] = 1
    name: ClassVar[str] = "UNKNOWN"
    retriable: ClassVar[bool] = False

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.name)
        self.message = message or self.name
        self.details = details

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


_TABLE: list[tuple[int, str, bool, str, str]] = [
    # code, NAME, retriable, ClassName, doc
    (1, "UNKNOWN", False, "UnknownError", "An unexpected error inside the broker; the request was not applied."),
    (2, "INVALID_REQUEST", False, "InvalidRequestError", "The request is malformed: wrong types or missing fields."),
    (3, "UNSUPPORTED_VERSION", False, "UnsupportedVersionError", "The handshake asked for a protocol version the broker does not speak."),
    (4, "FRAME_TOO_LARGE", False, "FrameTooLargeError", "A frame exceeded frame_bytes_max; the connection is closed."),
    (5, "UNKNOWN_API", False, "UnknownApiError", "The request names an API the broker does not have."),
    (6, "HANDSHAKE_REQUIRED", False, "HandshakeRequiredError", "The first request on a connection must be 'hello'."),
    (7, "TOO_MANY_REQUESTS_IN_FLIGHT", True, "TooManyRequestsInFlightError", "More requests in flight than the connection allows."),
    (8, "SHUTTING_DOWN", True, "ShuttingDownError", "The broker is stopping; retry against it once it is back."),
    (9, "REQUEST_TIMED_OUT", True, "RequestTimedOutError", "The request did not complete in time."),
    (10, "UNKNOWN_TOPIC_OR_PARTITION", False, "UnknownTopicOrPartitionError", "No such topic, or the partition index is out of range."),
    (11, "TOPIC_ALREADY_EXISTS", False, "TopicAlreadyExistsError", "A topic with this name exists."),
    (12, "INVALID_TOPIC_NAME", False, "InvalidTopicNameError", "Topic names are 1-249 characters of [A-Za-z0-9._-], not '.' or '..', not starting with '__millpond_' (reserved)."),
    (13, "INVALID_CONFIG", False, "InvalidConfigError", "A configuration key is unknown or its value is out of range."),
    (14, "OFFSET_OUT_OF_RANGE", False, "OffsetOutOfRangeError", "The offset is below the log start or above the log end; details give the valid range."),
    (15, "RECORD_TOO_LARGE", False, "RecordTooLargeError", "A record or batch exceeds batch_bytes_max."),
    (16, "CORRUPT_BATCH", False, "CorruptBatchError", "A batch failed its length, CRC or record-count check."),
    (17, "INVALID_PARTITIONS", False, "InvalidPartitionsError", "The partition count is out of range (1 to partitions_max)."),
    (18, "STORAGE_ERROR", True, "StorageError", "The broker could not read or write its data directory."),
    (19, "CONNECTION_CLOSED", True, "ConnectionClosedError", "The connection to the broker closed before an answer arrived (client side)."),
    (20, "OUT_OF_ORDER_SEQUENCE", True, "OutOfOrderSequenceError", "An idempotent producer's batch skips ahead of its sequence (an earlier batch is missing); resend in order."),
    (21, "INVALID_PRODUCER_EPOCH", False, "InvalidProducerEpochError", "The producer id was taken over by a newer epoch: this producer is fenced."),
    (22, "UNSUPPORTED_COMPRESSION_TYPE", False, "UnsupportedCompressionTypeError", "The batch's compression codec is unknown or its package is not installed (the 'compression' extra: snappy, lz4, zstd)."),
    (23, "CORRUPT_RANGE", False, "CorruptRangeError", "Stored records in an offset range are damaged and are not served (the intact batches before them were); details give first_offset, last_offset and next_offset, the next readable offset: seek there to continue past them."),
    (30, "THROTTLED", True, "ThrottledError", "A limit policy refused the request; details carry retry_after_s."),
    (31, "COST_EXCEEDS_LIMIT", False, "CostExceedsLimitError", "The request costs more than a limit policy's burst can ever admit; details name max_cost and unit: split it."),
    (32, "LIMIT_POLICY_FAILED", False, "LimitPolicyFailedError", "A limit policy's algorithm (a plug-in) failed; the request was not applied."),
    (33, "UNKNOWN_POLICY", False, "UnknownPolicyError", "No limit policy with this name."),
    # consumer groups (40-59): the coordinator's answers, as Kafka's group protocol (KIP-848 names where they exist)
    (40, "UNKNOWN_MEMBER_ID", False, "UnknownMemberIdError", "The member id is not in the group (it left, was expired, or never joined); join again with epoch 0."),
    (41, "FENCED_MEMBER_EPOCH", False, "FencedMemberEpochError", "The heartbeat's member epoch is neither the member's current nor its previous one; drop every partition and join again."),
    (42, "STALE_MEMBER_EPOCH", False, "StaleMemberEpochError", "The commit carries a member epoch that is not the member's current one; heartbeat, then commit again if the partition is still yours."),
    (43, "NOT_PARTITION_OWNER", False, "NotPartitionOwnerError", "The member does not own this partition (it was never assigned, or its revoke completed), so it may not commit it."),
    (44, "GROUP_NOT_EMPTY", False, "GroupNotEmptyError", "The consumer group has members; reset offsets or delete it only when it has none."),
    (45, "UNKNOWN_GROUP", False, "UnknownGroupError", "No consumer group with this id (never created, or deleted)."),
    (46, "INVALID_GROUP_ID", False, "InvalidGroupIdError", "Group ids are 1-255 printable ASCII characters without spaces."),
    (47, "FENCED_INSTANCE_ID", False, "FencedInstanceIdError", "A newer member took over this group_instance_id (static membership); this member id is retired."),
    (48, "INVALID_SESSION_TIMEOUT", False, "InvalidSessionTimeoutError", "session_timeout_s or rebalance_timeout_s is outside the broker's bounds; details give them."),
    (49, "UNSUPPORTED_ASSIGNOR", False, "UnsupportedAssignorError", "The assignor is unknown, or differs from the one the group's members use; details name them."),
    (50, "OFFSET_METADATA_TOO_LARGE", False, "OffsetMetadataTooLargeError", "Commit metadata exceeds offset_metadata_bytes_max (UTF-8 bytes)."),
    (51, "GROUP_MAX_SIZE_REACHED", False, "GroupMaxSizeReachedError", "The consumer group already has members_per_group_max members."),
    # queues (60-79): SQS's errors, under SQS's names where it has one (QueueDoesNotExist, QueueNameExists, ...)
    (60, "UNKNOWN_QUEUE", False, "UnknownQueueError", "No queue with this name (as SQS QueueDoesNotExist)."),
    (61, "QUEUE_ALREADY_EXISTS", False, "QueueAlreadyExistsError", "A queue with this name exists with other attributes (as SQS QueueNameExists)."),
    (62, "INVALID_QUEUE_NAME", False, "InvalidQueueNameError", "Queue names are 1-80 characters of [A-Za-z0-9_-]; a FIFO queue's name ends in '.fifo' (counted)."),
    (63, "RECEIPT_HANDLE_INVALID", False, "ReceiptHandleInvalidError", "The receipt handle is malformed or was never given out by this queue (as SQS ReceiptHandleIsInvalid)."),
    (64, "INVALID_PARAMETER_VALUE", False, "InvalidParameterValueError", "A parameter is out of range or not valid for this queue or message (as SQS InvalidParameterValue)."),
    (65, "MISSING_PARAMETER", False, "MissingParameterError", "A parameter this queue requires is missing, such as a FIFO queue's group_id (as SQS MissingParameter)."),
    (66, "QUEUE_FULL", True, "QueueFullError", "The queue holds queue_messages_max messages (the broker's bound on a queue's depth); retry once some are deleted or expired."),
    (67, "RESOURCE_NOT_FOUND", False, "ResourceNotFoundError", "No redrive task with this handle (as SQS ResourceNotFoundException)."),
    (70, "UNKNOWN_SUBSCRIPTION", False, "UnknownSubscriptionError", "No subscription with this id: a push subscription open on this connection (never opened, unsubscribed, or its queue was deleted), or a topic's fan-out subscription (never created, unsubscribed, or its topic was deleted)."),
    (71, "TOO_MANY_SUBSCRIPTIONS", False, "TooManySubscriptionsError", "The most subscriptions allowed are open: 100 push subscriptions per connection (unsubscribe one or use another connection), or 200 fan-out subscriptions per topic, 1,000 per broker, 16 MiB of their filter policies together (unsubscribe one)."),
]

ERRORS: dict[int, ErrorKind] = {}
EXCEPTIONS: dict[int, type[MillpondError]] = {1: MillpondError}
_by_name: dict[str, type[MillpondError]] = {}

for _code, _name, _retriable, _cls, _doc in _TABLE:
    ERRORS[_code] = ErrorKind(_code, _name, _retriable, _doc)
    _klass = type(_cls, (MillpondError,), {"code": _code, "name": _name, "retriable": _retriable, "__doc__": _doc})
    EXCEPTIONS[_code] = _klass
    _by_name[_cls] = _klass

UnknownError: type[MillpondError] = _by_name["UnknownError"]
InvalidRequestError: type[MillpondError] = _by_name["InvalidRequestError"]
UnsupportedVersionError: type[MillpondError] = _by_name["UnsupportedVersionError"]
FrameTooLargeError: type[MillpondError] = _by_name["FrameTooLargeError"]
UnknownApiError: type[MillpondError] = _by_name["UnknownApiError"]
HandshakeRequiredError: type[MillpondError] = _by_name["HandshakeRequiredError"]
TooManyRequestsInFlightError: type[MillpondError] = _by_name["TooManyRequestsInFlightError"]
ShuttingDownError: type[MillpondError] = _by_name["ShuttingDownError"]
RequestTimedOutError: type[MillpondError] = _by_name["RequestTimedOutError"]
UnknownTopicOrPartitionError: type[MillpondError] = _by_name["UnknownTopicOrPartitionError"]
TopicAlreadyExistsError: type[MillpondError] = _by_name["TopicAlreadyExistsError"]
InvalidTopicNameError: type[MillpondError] = _by_name["InvalidTopicNameError"]
InvalidConfigError: type[MillpondError] = _by_name["InvalidConfigError"]
OffsetOutOfRangeError: type[MillpondError] = _by_name["OffsetOutOfRangeError"]
RecordTooLargeError: type[MillpondError] = _by_name["RecordTooLargeError"]
CorruptBatchError: type[MillpondError] = _by_name["CorruptBatchError"]
CorruptRangeError: type[MillpondError] = _by_name["CorruptRangeError"]
InvalidPartitionsError: type[MillpondError] = _by_name["InvalidPartitionsError"]
StorageError: type[MillpondError] = _by_name["StorageError"]
ConnectionClosedError: type[MillpondError] = _by_name["ConnectionClosedError"]
ThrottledError: type[MillpondError] = _by_name["ThrottledError"]
OutOfOrderSequenceError: type[MillpondError] = _by_name["OutOfOrderSequenceError"]
InvalidProducerEpochError: type[MillpondError] = _by_name["InvalidProducerEpochError"]
UnsupportedCompressionTypeError: type[MillpondError] = _by_name["UnsupportedCompressionTypeError"]
CostExceedsLimitError: type[MillpondError] = _by_name["CostExceedsLimitError"]
LimitPolicyFailedError: type[MillpondError] = _by_name["LimitPolicyFailedError"]
UnknownPolicyError: type[MillpondError] = _by_name["UnknownPolicyError"]
UnknownMemberIdError: type[MillpondError] = _by_name["UnknownMemberIdError"]
FencedMemberEpochError: type[MillpondError] = _by_name["FencedMemberEpochError"]
StaleMemberEpochError: type[MillpondError] = _by_name["StaleMemberEpochError"]
NotPartitionOwnerError: type[MillpondError] = _by_name["NotPartitionOwnerError"]
GroupNotEmptyError: type[MillpondError] = _by_name["GroupNotEmptyError"]
UnknownGroupError: type[MillpondError] = _by_name["UnknownGroupError"]
InvalidGroupIdError: type[MillpondError] = _by_name["InvalidGroupIdError"]
FencedInstanceIdError: type[MillpondError] = _by_name["FencedInstanceIdError"]
InvalidSessionTimeoutError: type[MillpondError] = _by_name["InvalidSessionTimeoutError"]
UnsupportedAssignorError: type[MillpondError] = _by_name["UnsupportedAssignorError"]
OffsetMetadataTooLargeError: type[MillpondError] = _by_name["OffsetMetadataTooLargeError"]
GroupMaxSizeReachedError: type[MillpondError] = _by_name["GroupMaxSizeReachedError"]
UnknownQueueError: type[MillpondError] = _by_name["UnknownQueueError"]
QueueAlreadyExistsError: type[MillpondError] = _by_name["QueueAlreadyExistsError"]
InvalidQueueNameError: type[MillpondError] = _by_name["InvalidQueueNameError"]
ReceiptHandleInvalidError: type[MillpondError] = _by_name["ReceiptHandleInvalidError"]
InvalidParameterValueError: type[MillpondError] = _by_name["InvalidParameterValueError"]
MissingParameterError: type[MillpondError] = _by_name["MissingParameterError"]
QueueFullError: type[MillpondError] = _by_name["QueueFullError"]
ResourceNotFoundError: type[MillpondError] = _by_name["ResourceNotFoundError"]
UnknownSubscriptionError: type[MillpondError] = _by_name["UnknownSubscriptionError"]
TooManySubscriptionsError: type[MillpondError] = _by_name["TooManySubscriptionsError"]


def from_wire(code: int, body: Any) -> MillpondError:
    """Build the exception matching an error answer ``(code, {"name", "message", "details"?})``.

    An unknown code (a newer broker) becomes a plain ``MillpondError`` carrying that code.
    """
    klass = EXCEPTIONS.get(code)
    message = body.get("message", "") if isinstance(body, dict) else str(body)
    details = body.get("details") or {} if isinstance(body, dict) else {}
    if klass is None:
        exc = MillpondError(message, **details)
        exc.code = code  # type: ignore[misc]
        exc.name = body.get("name", f"ERROR_{code}") if isinstance(body, dict) else f"ERROR_{code}"  # type: ignore[misc]
        return exc
    return klass(message, **details)
