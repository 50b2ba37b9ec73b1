# Queues through the server over in-memory streams, in virtual time (a 30 s visibility timeout costs no real time):
# the wire API names and units, long polls woken by a send on another connection and by the timer, answers held
# until the journal's fsync, a restart replaying the journal; and hostile clients (malformed queue requests answer
# INVALID_REQUEST naming the field, the broker keeps serving, receives pipelined and never read stay bounded).
from __future__ import annotations

import trio
import trio.testing

from millpond.broker.wire import errors
from millpond.broker.wire.frames import encode_request

from serverkit import RawClient, start_harness


async def test_a_message_comes_back_after_its_visibility_timeout_in_virtual_time(harness, autojump_clock):
    c = await harness.connect()
    info = await c.ok("create_queue", {"name": "jobs"})
    assert (info["visibility_timeout_ms"], info["retention_ms"], info["fifo"]) == (30_000, 345_600_000, False)
    sent = await c.ok("send_message", {"queue": "jobs", "body": b"work", "attributes": {"n": 1}})
    start = trio.current_time()
    [m] = (await c.ok("receive_messages", {"queue": "jobs", "max_messages": 10}))["messages"]
    assert (m["message_id"], m["body"], m["attributes"], m["receive_count"]) == (sent["message_id"], b"work",
                                                                                 {"n": 1}, 1)
    assert await c.ok("receive_messages", {"queue": "jobs", "wait_ms": 20_000}) == {"messages": []}
    assert trio.current_time() - start == 20.0
    got = await c.ok("receive_messages", {"queue": "jobs", "wait_ms": 20_000})  # long poll: the timer wakes it
    assert trio.current_time() - start == 30.0
    [again] = got["messages"]
    assert (again["message_id"], again["receive_count"]) == (sent["message_id"], 2)
    await c.ok("change_visibility", {"queue": "jobs", "receipt_handle": again["receipt_handle"],
                                     "visibility_timeout_ms": 0})
    [third] = (await c.ok("receive_messages", {"queue": "jobs"}))["messages"]
    await c.ok("delete_message", {"queue": "jobs", "receipt_handle": third["receipt_handle"]})
    attrs = await c.ok("get_queue_attributes", {"name": "jobs"})
    assert (attrs["messages_visible"], attrs["messages_in_flight"], attrs["messages_delayed"]) == (0, 0, 0)


async def test_a_long_poll_returns_as_soon_as_another_connection_sends(harness, autojump_clock):
    worker, producer = await harness.connect(), await harness.connect()
    await worker.ok("create_queue", {"name": "q"})
    start = trio.current_time()
    answers = []

    async def poll() -> None:
        answers.append(await worker.ok("receive_messages", {"queue": "q", "max_messages": 10, "wait_ms": 20_000}))

    async with trio.open_nursery() as n:
        n.start_soon(poll)
        await trio.sleep(3)
        await producer.ok("send_message", {"queue": "q", "body": b"hi"})
    assert trio.current_time() - start == 3.0
    assert [m["body"] for m in answers[0]["messages"]] == [b"hi"]
    empty = await worker.ok("receive_messages", {"queue": "q", "wait_ms": 5_000})
    assert empty == {"messages": []} and trio.current_time() - start == 8.0


async def test_batches_fifo_and_lists_over_the_wire(harness):
    c = await harness.connect()
    await c.ok("create_queue", {"name": "f.fifo", "content_based_deduplication": True})
    sent = await c.ok("send_message_batch", {"queue": "f.fifo", "entries": [
        {"id": "a", "body": b"1", "group_id": "g"}, {"id": "b", "body": b"2"}, {"id": "c", "body": b"3",
                                                                              "group_id": "g"}]})
    assert [(s["id"], s["sequence_number"]) for s in sent["successful"]] == [("a", 1), ("c", 2)]
    assert [(f["id"], f["code"], f["name"]) for f in sent["failed"]] == [("b", 65, "MISSING_PARAMETER")]
    got = (await c.ok("receive_messages", {"queue": "f.fifo", "max_messages": 10}))["messages"]
    assert [(m["body"], m["group_id"], m["sequence_number"]) for m in got] == [(b"1", "g", 1), (b"3", "g", 2)]
    done = await c.ok("delete_message_batch", {"queue": "f.fifo", "entries": [
        {"id": "x", "receipt_handle": m["receipt_handle"]} for m in got[:1]]})
    assert done == {"successful": ["x"], "failed": []}
    assert await c.ok("list_queues", {}) == {"queues": ["f.fifo"]}
    code, answer = await c.call("get_queue_attributes", {"name": "nope"})
    assert (code, answer["name"]) == (errors.UnknownQueueError.code, "UNKNOWN_QUEUE")


async def test_queue_changes_are_answered_after_the_fsync_and_survive_a_restart(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path / "d", fsync="always")
    c = await h.connect()
    await c.ok("create_queue", {"name": "q", "visibility_timeout_ms": 60_000})
    before = h.broker.statistics().fsyncs
    await c.ok("send_message", {"queue": "q", "body": b"a"})
    await c.ok("send_message", {"queue": "q", "body": b"b"})
    assert h.broker.statistics().fsyncs >= before + 2
    [a] = (await c.ok("receive_messages", {"queue": "q"}))["messages"]
    await h.broker.shutdown()

    h2 = await start_harness(nursery, tmp_path / "d", fsync="always")
    c2 = await h2.connect()
    attrs = await c2.ok("get_queue_attributes", {"name": "q"})
    assert (attrs["visibility_timeout_ms"], attrs["messages_visible"], attrs["messages_in_flight"]) == (60_000, 1, 1)
    [b] = (await c2.ok("receive_messages", {"queue": "q"}))["messages"]
    assert b["body"] == b"b"
    await c2.ok("delete_message", {"queue": "q", "receipt_handle": a["receipt_handle"]})  # a handle from before
    assert (await c2.ok("get_queue_attributes", {"name": "q"}))["messages_in_flight"] == 1
    await h2.broker.shutdown()


MALFORMED = [
    ("create_queue", {}, "create_queue: missing field 'name'"),
    ("create_queue", {"name": "q", "visibility_timeout_ms": "30"}, "field 'visibility_timeout_ms' must be"),
    ("send_message", {"queue": "q", "body": "text"}, "send_message: field 'body' must be bytes"),
    ("send_message", {"queue": "q", "body": b"x", "attributes": {"a": [1]}},
     "field 'attributes'\\['a'\\] must be string or integer or number or bytes, got array"),
    ("send_message", {"queue": "q", "body": b"x", "attributes": {1: "x"}}, "field 'attributes' key must be string, "
                                                                          "got integer"),
    ("send_message", {"queue": "q", "body": b"x", "delay_ms": -5}, "field 'delay_ms' must be >= 0"),
    ("send_message_batch", {"queue": "q", "entries": [{"id": "a"}]}, "missing field 'entries'\\[0\\].body"),
    ("send_message_batch", {"queue": "q", "entries": [{"id": 1, "body": b"x"}]}, "field 'entries'\\[0\\].id must"),
    ("send_message_batch", {"queue": "q", "entries": {"a": 1}}, "field 'entries' must be array"),
    ("receive_messages", {"queue": "q", "max_messages": "10"}, "field 'max_messages' must be an integer"),
    ("delete_message", {"queue": "q"}, "delete_message: missing field 'receipt_handle'"),
    ("change_visibility", {"queue": "q", "receipt_handle": "h"}, "missing field 'visibility_timeout_ms'"),
    ("delete_message_batch", {"queue": "q", "entries": [[1, 2]]}, "field 'entries'\\[0\\] must be a map"),
    ("send_message_batch", {"queue": "q", "entries": [{"id": "a", "body": b"x"}, {"id": "b", "body": b"y",
                                                                                   "group_id": 7}]},
     "field 'entries'\\[1\\].group_id must be string or null, got integer"),
    ("change_visibility_batch", {"queue": "q", "entries": [{"id": "a", "receipt_handle": "h",
                                                             "visibility_timeout_ms": 5},
                                                            {"id": "b", "receipt_handle": "h",
                                                             "visibility_timeout_ms": -1}]},
     "field 'entries'\\[1\\].visibility_timeout_ms must be >= 0, got -1"),
    ("send_message", {"queue": "q", "body": b"x", "delay_ms": 1.5}, "field 'delay_ms' must be integer or null, got"
                                                                    " number"),
    ("receive_messages", [], "body of 'receive_messages' must be a map"),
]


async def test_malformed_queue_requests_answer_invalid_request_naming_the_field_and_the_broker_keeps_serving(
        harness):
    import re
    good = await harness.connect()
    await good.ok("create_queue", {"name": "q"})
    bad = await harness.connect()
    for api, body, message in MALFORMED:
        code, answer = await bad.call(api, body)
        assert code == errors.InvalidRequestError.code, (api, body, answer)
        assert re.search(message, answer["message"]), (message, answer["message"])
    await good.ok("send_message", {"queue": "q", "body": b"still here"})
    assert [m["body"] for m in (await bad.ok("receive_messages", {"queue": "q"}))["messages"]] == [b"still here"]


async def test_a_client_pipelining_receives_it_never_reads_stays_bounded(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path, connection_outbox_bytes_max=4 * 1024 * 1024)
    other = await h.connect()
    await other.ok("create_queue", {"name": "q", "visibility_timeout_ms": 0})  # every receive gets the messages
    for i in range(8):
        await other.ok("send_message", {"queue": "q", "body": bytes([i]) * (1024 * 1024 - 100)})
    client_side, server_side = trio.testing.lockstep_stream_pair()
    h.nursery.start_soon(h.broker.serve_stream, server_side)
    slow = RawClient(client_side)
    await slow.ok("hello", {"protocol_version": 1, "client_id": "slow"})
    receives = b"".join(encode_request(100 + i, "receive_messages", {"queue": "q", "max_messages": 1})
                        for i in range(2000))
    sending = trio.CancelScope()

    async def pipeline() -> None:
        with sending:
            await slow.stream.send_all(receives)

    nursery.start_soon(pipeline)
    await trio.testing.wait_all_tasks_blocked()
    [conn] = [c for c in h.broker.connections if c.statistics().unsent_bytes]
    stats = conn.statistics()
    assert stats.unsent_bytes <= 4 * 1024 * 1024 + 2 * (1024 * 1024 + 1024)
    assert stats.frames <= 1 + 8  # hello + the receives whose answers fit: the rest were not even read
    for _ in range(5):  # meanwhile everyone else is served
        assert len((await other.ok("receive_messages", {"queue": "q"}))["messages"]) == 1
    sending.cancel()
    await slow.stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert conn.closed
    await h.broker.shutdown()
