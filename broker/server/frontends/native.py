# The native front door: millpond's own protocol (docs/protocol.md; length-prefixed msgpack frames) translated to
# the engine's typed requests and its answers back to frames. Owns the API names, the handshake and per-connection
# session state (client id, the largest answer the client accepts). Knows nothing of sockets, waiting or timers.
from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from millpond.broker.config import BrokerConfig
from millpond.broker.core.engine import BrokerInfo, Hello
import millpond.broker.core.fanout.api as fanout
import millpond.broker.core.groups.api as groups
import millpond.broker.core.limits.api as limits
import millpond.broker.core.log.api as log
import millpond.broker.core.queues.api as queues
import millpond.broker.core.queues.push as push
from millpond.broker.core.groups.types import GroupDescription, GroupListing
from millpond.broker.server.frontends.typed import RequestSchema, to_plain
from millpond.broker.wire.errors import (
    FrameTooLargeError,
    HandshakeRequiredError,
    InvalidRequestError,
    MillpondError,
    UnknownApiError,
    UnknownError,
    UnsupportedVersionError,
)
from millpond.broker.wire.frames import (
    PROTOCOL_VERSION,
    FrameDecoder,
    decode_request,
    encode_fetch_answer_parts,
    encode_response_parts,
)

SUPPORTED_VERSIONS = (PROTOCOL_VERSION,)
# Room in an answer frame for everything but the batches: the envelope and, per partition, its row's other fields.
_ENVELOPE_BYTES = 64
_ROW_BYTES = 48
_MESSAGE_BYTES = 512  # a received message's fields but its body and attributes (ids, handle, names, numbers)

REQUESTS: dict[str, type] = {
    "create_topic": log.CreateTopic,
    "delete_topic": log.DeleteTopic,
    "add_partitions": log.AddPartitions,
    "list_topics": log.ListTopics,
    "describe_topic": log.DescribeTopic,
    "metadata": log.Metadata,
    "produce": log.Produce,
    "produce_batches": log.ProduceBatches,
    "fetch": log.Fetch,
    "list_offsets": log.ListOffsets,
    "init_producer": log.InitProducer,
    "group_join": groups.GroupJoin,
    "group_heartbeat": groups.GroupHeartbeat,
    "group_leave": groups.GroupLeave,
    "offset_commit": groups.OffsetCommit,
    "offset_fetch": groups.OffsetFetch,
    "list_groups": groups.ListGroups,
    "describe_group": groups.DescribeGroup,
    "reset_offsets": groups.ResetOffsets,
    "delete_group": groups.DeleteGroup,
    "limits_set": limits.LimitsSet,
    "limits_list": limits.LimitsList,
    "limits_delete": limits.LimitsDelete,
    "create_queue": queues.CreateQueue,
    "delete_queue": queues.DeleteQueue,
    "list_queues": queues.ListQueues,
    "get_queue_attributes": queues.GetQueueAttributes,
    "set_queue_attributes": queues.SetQueueAttributes,
    "purge_queue": queues.PurgeQueue,
    "send_message": queues.SendMessage,
    "send_message_batch": queues.SendMessageBatch,
    "receive_messages": queues.ReceiveMessages,
    "delete_message": queues.DeleteMessage,
    "delete_message_batch": queues.DeleteMessageBatch,
    "change_visibility": queues.ChangeVisibility,
    "change_visibility_batch": queues.ChangeVisibilityBatch,
    "start_message_move_task": queues.StartMessageMoveTask,
    "cancel_message_move_task": queues.CancelMessageMoveTask,
    "list_message_move_tasks": queues.ListMessageMoveTasks,
    "queue_subscribe": push.QueueSubscribe,
    "queue_deliver": push.QueueDeliver,
    "queue_ack": push.QueueAck,
    "queue_nack": push.QueueNack,
    "queue_unsubscribe": push.QueueUnsubscribe,
    "subscribe": fanout.Subscribe,
    "unsubscribe": fanout.Unsubscribe,
    "list_subscriptions": fanout.ListSubscriptions,
    "describe_subscription": fanout.DescribeSubscription,
}
# Requests that belong to their connection (push subscriptions): the codec sets their `connection` field.
_BOUND = (push.QueueSubscribe, push.QueueDeliver, push.QueueAck, push.QueueNack, push.QueueUnsubscribe)


@dataclasses.dataclass(frozen=True, slots=True)
class _HelloRequest:
    protocol_version: int
    client_id: str = ""
    frame_bytes_max: int | None = None  # the largest answer frame the client accepts; None: the broker's own


class Session:
    """One connection's protocol state; ``connection`` numbers it among the codec's connections (what a push
    subscription belongs to)."""

    __slots__ = ("client_id", "handshaken", "answer_bytes_max", "connection")

    def __init__(self, answer_bytes_max: int, connection: int = 0) -> None:
        self.client_id = ""
        self.handshaken = False
        self.answer_bytes_max = answer_bytes_max
        self.connection = connection


class NativeCodec:
    """Frames <-> engine requests and outcomes for one broker's config."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self._schemas = {api: RequestSchema(cls, api) for api, cls in REQUESTS.items()}
        self._hello = RequestSchema(_HelloRequest, "hello")
        self._connections = itertools.count(1)

    def new_session(self) -> Session:
        return Session(self.config.frame_bytes_max, next(self._connections))

    def new_decoder(self) -> FrameDecoder:
        return FrameDecoder(self.config.frame_bytes_max)

    # -- requests -----------------------------------------------------------------------------------------------
    def decode(self, session: Session, body: bytes | memoryview) -> tuple[int, Any]:
        """``(correlation_id, request)`` of one frame body. Raises ``MillpondError`` (``InvalidRequestError``,
        ``HandshakeRequiredError``, ``UnsupportedVersionError``, ``UnknownApiError``) with the correlation id in
        ``details["correlation_id"]`` when the envelope had one."""
        cid, api, args = decode_request(body)
        try:
            if not session.handshaken:
                if api != "hello":
                    raise HandshakeRequiredError(f"the first request must be 'hello', got {api!r}")
                return cid, self._handshake(session, args)
            schema = self._schemas.get(api)
            if schema is None:
                if api == "hello":
                    raise InvalidRequestError("hello: this connection's handshake is already done")
                raise UnknownApiError(f"unknown api {api!r}")
            request = schema.build(args)
            if type(request) is log.Fetch:
                request = self._fit_fetch(session, request)
            elif type(request) is queues.ReceiveMessages:
                request = self._fit_receive(session, request)
            elif isinstance(request, _BOUND):
                # whatever the client sent, a subscription is its own connection's
                request = dataclasses.replace(request, connection=session.connection)
                if type(request) is push.QueueDeliver:
                    request = self._fit_deliver(session, request)
            return cid, request
        except MillpondError as exc:
            exc.details.setdefault("correlation_id", cid)
            raise

    def _handshake(self, session: Session, args: Any) -> Hello:
        hello = self._hello.build(args)
        if hello.protocol_version not in SUPPORTED_VERSIONS:
            raise UnsupportedVersionError(
                f"protocol version {hello.protocol_version} is not supported; this broker speaks "
                f"{list(SUPPORTED_VERSIONS)}", supported=list(SUPPORTED_VERSIONS))
        if len(hello.client_id) > 255:
            raise InvalidRequestError("hello: client_id is longer than 255 characters")
        accepts = self.config.frame_bytes_max if hello.frame_bytes_max is None else hello.frame_bytes_max
        least = self.config.batch_bytes_max + 1024
        if accepts < least:
            raise InvalidRequestError(
                f"hello: frame_bytes_max {accepts} is below what one batch may need ({least} bytes: the broker's "
                f"batch_bytes_max + 1 KiB)", frame_bytes_max_min=least)
        session.client_id = hello.client_id
        session.answer_bytes_max = min(accepts, self.config.frame_bytes_max)
        session.handshaken = True
        return Hello(hello.client_id)

    @staticmethod
    def _fit_fetch(session: Session, req: log.Fetch) -> log.Fetch:
        # An answer frame must fit what the client accepts: the batches' budget is that less the rows' framing.
        room = session.answer_bytes_max - _ENVELOPE_BYTES - sum(_ROW_BYTES + len(p.topic) for p in req.partitions)
        room = max(room, 1)
        if req.max_bytes is None or req.max_bytes > room:
            return dataclasses.replace(req, max_bytes=room)
        return req

    @staticmethod
    def _fit_receive(session: Session, req: queues.ReceiveMessages) -> queues.ReceiveMessages:
        # The messages' bodies and attributes get what the client accepts less each message's other fields.
        room = max(session.answer_bytes_max - _ENVELOPE_BYTES - _MESSAGE_BYTES * min(req.max_messages, 1000), 1)
        if req.max_bytes is None or req.max_bytes > room:
            return dataclasses.replace(req, max_bytes=room)
        return req

    @staticmethod
    def _fit_deliver(session: Session, req: push.QueueDeliver) -> push.QueueDeliver:
        # as a receive of a whole window
        room = max(session.answer_bytes_max - _ENVELOPE_BYTES - _MESSAGE_BYTES * push.PREFETCH_MAX, 1)
        if req.max_bytes is None or req.max_bytes > room:
            return dataclasses.replace(req, max_bytes=room)
        return req

    # -- answers ------------------------------------------------------------------------------------------------
    def encode(self, correlation_id: int, value: Any) -> list[bytes | memoryview]:
        """The frame (as pieces to send in order) answering ``correlation_id`` with the engine's answer ``value``.
        Stored batches in a fetch answer are sent as they are, never copied into the frame."""
        if type(value) is log.Fetched:
            return encode_fetch_answer_parts(correlation_id, value.partitions)
        return list(encode_response_parts(correlation_id, 0, _plain(value)))

    def encode_error(self, correlation_id: int, exc: MillpondError) -> list[bytes | memoryview]:
        return list(encode_response_parts(correlation_id, exc.code, exc.to_wire()))

    def frame_too_large(self, exc: FrameTooLargeError) -> list[bytes | memoryview]:
        return self.encode_error(0, exc)


def _plain(value: Any) -> Any:
    """An answer as the protocol's maps (docs/protocol.md); ``None`` is the empty map."""
    if value is None:
        return {}
    if type(value) is BrokerInfo:
        return {"protocol_version": PROTOCOL_VERSION, **to_plain(value)}
    if type(value) is log.ProducedBatches:
        return {"results": [[r.topic, r.partition, 0, r.produced.base_offset, r.produced.timestamp_ms, None]
                            if r.error is None else [r.topic, r.partition, *_refusal(r.error)]
                            for r in value.results]}
    if type(value) is groups.Groups:
        return {"groups": [_listing(g) for g in value.groups]}
    if type(value) is GroupDescription:
        return _description(value)
    return to_plain(value)


def _refusal(exc: Exception) -> tuple[int, int, int, Any]:
    """A refused batch's ``code, base_offset (-1), timestamp_ms (-1), error body`` (as an error answer's body)."""
    if not isinstance(exc, MillpondError):
        exc = UnknownError(f"{type(exc).__name__}: {exc}")
    return exc.code, -1, -1, exc.to_wire()


def _listing(g: GroupListing) -> dict[str, Any]:
    return {"group": g.group_id, "state": g.state.name.lower(), "members": g.members}


def _description(d: GroupDescription) -> dict[str, Any]:
    return {
        "group": d.group_id,
        "state": d.state.name.lower(),
        "group_epoch": d.group_epoch,
        "assignor": d.assignor,
        "members": [
            {
                "member_id": m.member_id, "group_instance_id": m.group_instance_id, "client_id": m.client_id,
                "host": m.host, "member_epoch": m.member_epoch, "state": m.state.name.lower(),
                "topics": list(m.topics), "assignment": to_plain(m.assignment), "revoking": to_plain(m.revoking),
            }
            for m in d.members
        ],
        "offsets": [to_plain(o) for o in d.offsets],
    }


__all__ = ["NativeCodec", "REQUESTS", "Session"]
