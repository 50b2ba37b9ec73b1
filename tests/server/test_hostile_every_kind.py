# Every request kind of the native protocol, sent by a client that pipelines it without reading the answers and
# then resets its connection: the broker stays up, keeps answering everyone else, frees what that connection held
# (its parked requests and their answers) and logs no internal error. The table must name every kind in REQUESTS,
# so a kind added later is covered or this test fails.
from __future__ import annotations

import logging
import os
import socket
import struct
from typing import Any

import pytest
import trio

from millpond.broker.server.embedded import open_broker
from millpond.broker.server.frontends.native import REQUESTS
from millpond.broker.wire.batch import encode_batch
from millpond.broker.wire.frames import encode_request

from serverkit import RawClient

COPIES = 200  # pipelined per kind: more than requests_in_flight_max, so reading stops while they are parked
MB = 1 << 20
RSS_GROWTH_MAX = 200 * MB  # the broker runs in this process: what its connections hold shows in its RSS


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bodies(handle: str, subscription: str) -> dict[str, dict[str, Any]]:
    """A well-formed body per request kind, aimed at what the set-up made (so the requests go deep: fetches of a
    1 MB record, long polls, deliveries, commits), or at names that do not exist where a request would change
    what the others use."""
    batch = encode_batch([(1_700_000_000_000, None, b"v" * 100, None)])
    return {
        "hello": {"protocol_version": 1, "client_id": "hostile"},
        "create_topic": {"name": "t"},
        "delete_topic": {"name": "gone"},
        "add_partitions": {"name": "t", "partitions": 1},
        "list_topics": {},
        "describe_topic": {"name": "t"},
        "metadata": {"topics": ["t", "gone"]},
        "produce": {"topic": "t", "partition": 0, "batch": batch},
        "produce_batches": {"batches": [["t", 0, batch], ["t", 0, batch]]},
        "fetch": {"partitions": [["t", 0, 0]], "max_bytes": 4 * MB, "max_wait_ms": 0},
        "init_producer": {},
        "list_offsets": {"topic": "t", "partition": 0, "spec": "latest"},
        "group_join": {"group": "g", "topics": ["t"], "session_timeout_ms": 10_000, "rebalance_timeout_ms": 10_000},
        "group_heartbeat": {"group": "g", "member_id": "nobody", "member_epoch": 1, "owned": None},
        "group_leave": {"group": "g", "member_id": "nobody", "temporary": False},
        "offset_commit": {"group": "g", "member_id": "nobody", "member_epoch": 1, "offsets": [["t", 0, 1]]},
        "offset_fetch": {"group": "g", "partitions": None},
        "list_groups": {},
        "describe_group": {"group": "g"},
        "reset_offsets": {"group": "idle", "topic": "t", "to": "earliest"},
        "delete_group": {"group": "never"},
        "limits_set": {"policy": {"name": "p", "scope": "client:nobody-*", "unit": "records",
                                  "algorithm": "token_bucket", "params": {"rate": 1000, "burst": 100}}},
        "limits_list": {},
        "limits_delete": {"name": "none"},
        "create_queue": {"name": "q"},
        "set_queue_attributes": {"name": "q", "visibility_timeout_ms": 30_000},
        "get_queue_attributes": {"name": "q"},
        "list_queues": {},
        "delete_queue": {"name": "gone"},
        "purge_queue": {"name": "empty"},
        "send_message": {"queue": "q", "body": b"m" * 1000},
        "send_message_batch": {"queue": "q", "entries": [{"id": f"e{i}", "body": b"m" * 100} for i in range(10)]},
        "receive_messages": {"queue": "q", "max_messages": 10, "wait_ms": 20_000},
        "delete_message": {"queue": "q", "receipt_handle": handle},
        "delete_message_batch": {"queue": "q", "entries": [{"id": "a", "receipt_handle": handle}]},
        "change_visibility": {"queue": "q", "receipt_handle": handle, "visibility_timeout_ms": 60_000},
        "change_visibility_batch": {"queue": "q", "entries": [{"id": "a", "receipt_handle": handle,
                                                               "visibility_timeout_ms": 60_000}]},
        "start_message_move_task": {"source": "q-dlq"},
        "cancel_message_move_task": {"task_handle": "none"},
        "list_message_move_tasks": {"source": "q-dlq"},
        "queue_subscribe": {"queue": "q", "subscription": 1, "prefetch": 10},
        "queue_deliver": {"subscription": 1, "wait_ms": 20_000},
        "queue_ack": {"queue": "q", "subscription": 1, "receipt_handles": [handle]},
        "queue_nack": {"queue": "q", "subscription": 1, "receipt_handles": [handle]},
        "queue_unsubscribe": {"subscription": 1},
        "subscribe": {"topic": "t", "queue": "fanned"},
        "unsubscribe": {"id": "none"},
        "list_subscriptions": {"topic": "t"},
        "describe_subscription": {"id": subscription},
    }


def test_the_table_names_every_request_kind():
    assert set(bodies("h", "s")) == set(REQUESTS) | {"hello"}


class _Internal(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.errors.append(self.format(record))


@pytest.mark.timeout(300)
async def test_every_kind_pipelined_unread_then_reset_leaves_the_broker_serving(tmp_path):
    internal = _Internal()
    logging.getLogger("millpond").addHandler(internal)
    try:
        async with open_broker(tmp_path / "d", fsync="never") as b:
            c = RawClient(await trio.open_tcp_stream(b.host, b.port))
            await c.ok("hello", {"protocol_version": 1, "client_id": "setup"})
            await c.ok("create_topic", {"name": "t"})
            await c.ok("produce", {"topic": "t", "partition": 0,
                                   "batch": encode_batch([(1_700_000_000_000, None, b"x" * MB, None)])})
            await c.ok("create_queue", {"name": "q-dlq"})
            await c.ok("create_queue", {"name": "q", "dead_letter_queue": "q-dlq", "max_receive_count": 5})
            await c.ok("create_queue", {"name": "empty"})
            await c.ok("create_queue", {"name": "fanned"})
            await c.ok("send_message", {"queue": "q", "body": b"held"})
            [msg] = (await c.ok("receive_messages", {"queue": "q", "max_messages": 1}))["messages"]
            sub = (await c.ok("subscribe", {"topic": "t", "queue": "fanned"}))["id"]
            table = bodies(msg["receipt_handle"], sub)
            base = b.statistics()
            rss_before = rss()
            for kind, body in sorted(table.items()):
                before = b.statistics().requests
                hostile = await trio.open_tcp_stream(b.host, b.port)
                frames = [encode_request(1, "hello", {"protocol_version": 1, "client_id": f"hostile-{kind}"})]
                frames += [encode_request(2 + i, kind, body) for i in range(COPIES)]
                with trio.move_on_after(2):  # the broker stops reading a client that does not read: fine
                    await hostile.send_all(b"".join(frames))
                with trio.fail_after(10):  # it was read and handled (up to what it may have in flight)
                    while b.statistics().requests < before + 1 + min(COPIES, 8):
                        await trio.sleep(0.01)
                await trio.sleep(0.05)
                hostile.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                await hostile.aclose()
                # everyone else is still served, at once
                with trio.fail_after(10):
                    assert (await c.ok("describe_topic", {"name": "t"}))["name"] == "t", kind
                    got = await c.ok("fetch", {"partitions": [["t", 0, 0]], "max_bytes": 2 * MB, "max_wait_ms": 0})
                    assert got["partitions"][0][2] == 0, (kind, got["partitions"][0][:5])
                    await c.ok("send_message", {"queue": "empty", "body": b"probe"})
                    probe = (await c.ok("receive_messages", {"queue": "empty", "max_messages": 1}))["messages"]
                    assert [m["body"] for m in probe] == [b"probe"], kind
                    await c.ok("delete_message", {"queue": "empty", "receipt_handle": probe[0]["receipt_handle"]})
                    # the reset connection is gone, with the requests it had parked
                    while (b.statistics().connections, b.statistics().waiting) != (base.connections, base.waiting):
                        await trio.sleep(0.01)
                assert rss() - rss_before < RSS_GROWTH_MAX, kind
            assert internal.errors == []
            await c.stream.aclose()
    finally:
        logging.getLogger("millpond").removeHandler(internal)
