# The consumer-group APIs of docs/protocol.md: validates request bodies, calls the GroupCoordinator and turns its
# answers into wire maps. Sans-IO like the engine; commits come back as `Durable` answers the server releases once
# the offsets topic is fsynced. Must not know about sockets, trio or frames.
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from millpond.broker.core.fields import field
from millpond.broker.core.groups import (
    AtTimestamp,
    GroupCoordinator,
    HeartbeatAnswer,
    OffsetStore,
    resolve_reset,
)
from millpond.broker.core.log import LogManager
from millpond.broker.wire.errors import InvalidRequestError

if TYPE_CHECKING:
    from millpond.broker.core.engine import Context, Durable


def _ms_to_s(body: dict[str, Any], name: str, api: str) -> float | None:
    value = field(body, name, (int, type(None)), api, None)
    return None if value is None else value / 1000


def _heartbeat_answer(a: HeartbeatAnswer) -> dict[str, Any]:
    return {
        "member_id": a.member_id,
        "member_epoch": a.member_epoch,
        "assignment": [[tp.topic, tp.partition] for tp in a.assignment],
        "state": a.state.name.lower(),
        "heartbeat_interval_ms": int(a.heartbeat_interval_s * 1000),
    }


class GroupApi:
    """Answers ``group_join``, ``group_heartbeat``, ``group_leave``, ``offset_commit``, ``offset_fetch``,
    ``list_groups``, ``describe_group``, ``reset_offsets`` and ``delete_group``."""

    def __init__(self, log: LogManager, coordinator: GroupCoordinator, store: OffsetStore) -> None:
        self.log = log
        self.coordinator = coordinator
        self.store = store

    def handlers(self) -> dict[str, Any]:
        return {
            "group_join": self.join,
            "group_heartbeat": self.heartbeat,
            "group_leave": self.leave,
            "offset_commit": self.commit,
            "offset_fetch": self.fetch_offsets,
            "list_groups": self.list_groups,
            "describe_group": self.describe,
            "reset_offsets": self.reset_offsets,
            "delete_group": self.delete,
        }

    def _durable(self, answer: dict[str, Any], offset: int) -> "Durable":
        from millpond.broker.core.engine import Durable

        plog = self.store.partition_log
        assert plog is not None  # OffsetStore.open created it
        return Durable(answer, plog, offset)

    # -- membership --------------------------------------------------------------------------------------------
    def join(self, body: dict[str, Any], ctx: "Context") -> dict[str, Any]:
        api = "group_join"
        answer = self.coordinator.join(
            field(body, "group", str, api),
            field(body, "topics", list, api),
            ctx.now,
            member_id=field(body, "member_id", (str, type(None)), api, None),
            group_instance_id=field(body, "group_instance_id", (str, type(None)), api, None),
            client_id=ctx.client_id,
            host=ctx.host,
            session_timeout_s=_ms_to_s(body, "session_timeout_ms", api),
            rebalance_timeout_s=_ms_to_s(body, "rebalance_timeout_ms", api),
            assignor=field(body, "assignor", (str, type(None)), api, None),
        )
        return _heartbeat_answer(answer)

    def heartbeat(self, body: dict[str, Any], ctx: "Context") -> dict[str, Any]:
        api = "group_heartbeat"
        owned = field(body, "owned", (list, type(None)), api, None)
        answer = self.coordinator.heartbeat(
            field(body, "group", str, api),
            field(body, "member_id", str, api),
            field(body, "member_epoch", int, api),
            None if owned is None else [tuple(x) if isinstance(x, list) else x for x in owned],
            ctx.now,
            topics=field(body, "topics", (list, type(None)), api, None),
        )
        return _heartbeat_answer(answer)

    def leave(self, body: dict[str, Any], ctx: "Context") -> dict[str, Any]:
        api = "group_leave"
        self.coordinator.leave(
            field(body, "group", str, api),
            field(body, "member_id", str, api),
            ctx.now,
            temporary=field(body, "temporary", bool, api, False),
        )
        return {}

    # -- offsets -----------------------------------------------------------------------------------------------
    def commit(self, body: dict[str, Any], ctx: "Context") -> "Durable":
        api = "offset_commit"
        raw = field(body, "offsets", list, api)
        offsets: dict[tuple[str, int], Any] = {}
        for item in raw:
            if (
                not isinstance(item, list)
                or len(item) not in (3, 4)
                or not isinstance(item[0], str)
                or type(item[1]) is not int
                or type(item[2]) is not int
                or (len(item) == 4 and not isinstance(item[3], str))
            ):
                raise InvalidRequestError(f"{api}: offsets must be [topic, partition, offset, metadata?], got {item!r}")
            offsets[(item[0], item[1])] = (item[2], item[3]) if len(item) == 4 else item[2]
        member_id = field(body, "member_id", (str, type(None)), api, None)
        epoch = field(body, "member_epoch", int, api, -1)
        at = self.coordinator.commit(field(body, "group", str, api), member_id, epoch, offsets, ctx.now_ms)
        return self._durable({}, at)

    def fetch_offsets(self, body: dict[str, Any], ctx: "Context") -> dict[str, Any]:
        api = "offset_fetch"
        raw = field(body, "partitions", (list, type(None)), api, None)
        parts = None if raw is None else [tuple(x) if isinstance(x, list) else x for x in raw]
        found = self.coordinator.fetch_offsets(field(body, "group", str, api), parts)
        rows = [[tp.topic, tp.partition, c.offset, c.metadata] for tp, c in sorted(found.items())]
        if parts is not None:
            # A partition never committed answers -1, as Kafka's OffsetFetch.
            have = {(r[0], r[1]) for r in rows}
            rows += [[t, p, -1, ""] for t, p in parts if (t, p) not in have]
        return {"offsets": rows}

    # -- admin -------------------------------------------------------------------------------------------------
    def list_groups(self, body: dict[str, Any], ctx: "Context") -> dict[str, Any]:
        return {
            "groups": [
                {"group": g.group_id, "state": g.state.name.lower(), "members": g.members}
                for g in self.coordinator.list_groups()
            ]
        }

    def describe(self, body: dict[str, Any], ctx: "Context") -> dict[str, Any]:
        gid = field(body, "group", str, "describe_group")

        def end_offset(topic: str, partition: int) -> int | None:
            t = self.log.topics.get(topic)
            if t is None or partition >= len(t.partitions):
                return None
            return t.partitions[partition].high_watermark

        d = self.coordinator.describe(gid, end_offset)
        return {
            "group": d.group_id,
            "state": d.state.name.lower(),
            "group_epoch": d.group_epoch,
            "assignor": d.assignor,
            "members": [
                {
                    "member_id": m.member_id,
                    "group_instance_id": m.group_instance_id,
                    "client_id": m.client_id,
                    "host": m.host,
                    "member_epoch": m.member_epoch,
                    "state": m.state.name.lower(),
                    "topics": list(m.topics),
                    "assignment": [[tp.topic, tp.partition] for tp in m.assignment],
                    "revoking": [[tp.topic, tp.partition] for tp in m.revoking],
                }
                for m in d.members
            ],
            "offsets": [
                {
                    "topic": o.topic,
                    "partition": o.partition,
                    "committed_offset": o.committed_offset,
                    "metadata": o.metadata,
                    "end_offset": o.end_offset,
                    "lag": o.lag,
                }
                for o in d.offsets
            ],
        }

    def reset_offsets(self, body: dict[str, Any], ctx: "Context") -> "Durable":
        api = "reset_offsets"
        gid = field(body, "group", str, api)
        topic = field(body, "topic", str, api)
        spec = body.get("to")
        if isinstance(spec, dict) and set(spec) == {"timestamp_ms"} and type(spec["timestamp_ms"]) is int:
            to: Any = AtTimestamp(spec["timestamp_ms"])
        elif isinstance(spec, dict) and set(spec) == {"offset"} and type(spec["offset"]) is int:
            to = spec["offset"]
        elif spec in ("earliest", "latest"):
            to = spec
        else:
            raise InvalidRequestError(
                f"{api}: 'to' must be 'earliest', 'latest', {{'timestamp_ms': int}} or {{'offset': int}}, got {spec!r}"
            )
        partitions = field(body, "partitions", (list, type(None)), api, None)
        if partitions is not None and not all(type(p) is int for p in partitions):
            raise InvalidRequestError(f"{api}: partitions must be a list of integers")
        offsets = resolve_reset(self.log, topic, to, partitions)
        at = self.coordinator.reset_offsets(gid, offsets, ctx.now_ms)
        rows = [[tp.topic, tp.partition, off] for tp, off in sorted(offsets.items())]
        return self._durable({"offsets": rows}, at)

    def delete(self, body: dict[str, Any], ctx: "Context") -> "Durable":
        at = self.coordinator.delete_group(field(body, "group", str, "delete_group"), ctx.now_ms)
        return self._durable({}, at)


__all__ = ["GroupApi"]
