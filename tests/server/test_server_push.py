# Push delivery through the server: the wire names and units, a subscription owned by its connection (the codec
# stamps the connection, whatever the client sends), and hostile clients: pipelined subscribes past the bound,
# subscribing and then never reading, resetting mid-delivery. The broker's memory stays bounded (subscriptions,
# messages in flight, unsent bytes), everyone else is served, and what a gone connection held is visible again.
from __future__ import annotations

import socket
import struct

import trio
import trio.testing

from millpond.broker.core.queues.push import SUBSCRIPTIONS_PER_CONNECTION_MAX
from millpond.broker.server.connection import EOF_LINGER_S
from millpond.broker.server.embedded import open_broker
from millpond.broker.wire import errors
from millpond.broker.wire.frames import encode_request

from serverkit import RawClient, start_harness

MB = 1024 * 1024


async def answers(client: RawClient, n: int) -> dict[int, tuple[int, object]]:
    out = {}
    for _ in range(n):
        cid, code, body = await client.receive()
        out[cid] = (code, body)
    return out


async def test_subscribe_deliver_ack_nack_unsubscribe_over_the_wire(harness, autojump_clock):
    c = await harness.connect()
    await c.ok("create_queue", {"name": "q", "visibility_timeout_ms": 60_000})
    for body in (b"a", b"b", b"c"):
        await c.ok("send_message", {"queue": "q", "body": body})
    holder = await c.send("queue_subscribe", {"queue": "q", "subscription": 9, "prefetch": 2,
                                              "visibility_timeout_ms": 5_000})
    got = await c.ok("queue_deliver", {"subscription": 9})
    a, b = got["messages"]
    assert ([a["body"], b["body"]], got["unacked"], got["ended"]) == ([b"a", b"b"], 2, False)
    assert await c.ok("queue_ack", {"queue": "q", "subscription": 9, "receipt_handles": [a["receipt_handle"]]}) == {
        "failed": [], "unacked": 1}
    start = trio.current_time()
    nacked = await c.ok("queue_nack", {"queue": "q", "subscription": 9, "receipt_handles": [b["receipt_handle"]],
                                       "delay_ms": 2_000})
    assert nacked == {"failed": [], "unacked": 0}
    [cm] = (await c.ok("queue_deliver", {"subscription": 9}))["messages"]
    [bm] = (await c.ok("queue_deliver", {"subscription": 9}))["messages"]  # parked until b's delay ends
    assert (cm["body"], bm["body"], bm["receive_count"], trio.current_time() - start) == (b"c", b"b", 2, 2.0)
    deliver = await c.send("queue_deliver", {"subscription": 9})
    unsub = await c.send("queue_unsubscribe", {"subscription": 9})
    got = await answers(c, 3)
    assert got[deliver] == (0, {"messages": [], "unacked": 0, "ended": True})
    assert got[unsub] == got[holder] == (0, {"subscription": 9, "released": 2})
    info = await c.ok("get_queue_attributes", {"name": "q"})
    assert (info["messages_visible"], info["messages_in_flight"]) == (2, 0)


async def test_a_subscription_belongs_to_its_connection_whatever_the_client_sends(harness):
    owner, other = await harness.connect(), await harness.connect()
    await owner.ok("create_queue", {"name": "q"})
    await owner.ok("send_message", {"queue": "q", "body": b"x"})
    await owner.send("queue_subscribe", {"queue": "q", "subscription": 1, "prefetch": 1})
    [m] = (await owner.ok("queue_deliver", {"subscription": 1, "wait_ms": 0}))["messages"]
    [conn] = {s.connection for s in harness.broker.engine.push.subscriptions.values()}
    for api, body in [("queue_deliver", {"subscription": 1, "wait_ms": 0}),
                      ("queue_unsubscribe", {"subscription": 1}),
                      ("queue_deliver", {"subscription": 1, "wait_ms": 0, "connection": conn})]:
        code, answer = await other.call(api, body)
        assert (code, answer["name"]) == (errors.UnknownSubscriptionError.code, "UNKNOWN_SUBSCRIPTION")
    # an ack from another connection still deletes by receipt handle (as delete_message) and frees nothing
    done = await other.ok("queue_ack", {"queue": "q", "subscription": 1, "receipt_handles": [m["receipt_handle"]]})
    assert done == {"failed": [], "unacked": 0}
    assert list(harness.broker.engine.push.subscriptions.values())[0].held == {1: 1}
    info = await owner.ok("get_queue_attributes", {"name": "q"})
    assert (info["messages_visible"], info["messages_in_flight"]) == (0, 0)


async def test_pipelined_subscribes_past_the_bound_are_refused_and_closing_frees_them(harness, autojump_clock):
    c = await harness.connect()
    await c.ok("create_queue", {"name": "q"})
    n = SUBSCRIPTIONS_PER_CONNECTION_MAX + 200
    await c.send_bytes(b"".join(encode_request(1000 + i, "queue_subscribe", {"queue": "q", "subscription": i,
                                                                            "prefetch": 1000}) for i in range(n)))
    refused = await answers(c, 200)  # the first 100 are parked: no answer
    assert {code for code, _ in refused.values()} == {errors.TooManySubscriptionsError.code}
    assert sorted(refused) == [1000 + i for i in range(SUBSCRIPTIONS_PER_CONNECTION_MAX, n)]
    push = harness.broker.engine.push
    assert len(push.subscriptions) == SUBSCRIPTIONS_PER_CONNECTION_MAX
    closed_at = trio.current_time()
    await c.stream.aclose()  # a plain close (FIN): the subscriptions end at the end of stream, not after a linger
    while push.subscriptions:
        await trio.sleep(0.001)
    assert trio.current_time() - closed_at < 0.01 < EOF_LINGER_S
    assert push._per_connection == {}
    assert harness.broker.loop.statistics()["waiting"] == 0


async def test_a_subscriber_that_half_closes_gives_its_messages_back_at_once_and_reads_why(harness, autojump_clock):
    """End of stream from the subscriber (FIN, its reading side still open): the subscription can never be ended by
    it, so it ends now (as AMQP's channel close requeues unacked messages); a parked receive of the same peer is
    still answered through the linger, since a half-closed peer still reads."""
    c, other = await harness.connect(), await harness.connect()
    await c.ok("create_queue", {"name": "q", "visibility_timeout_ms": 3_600_000})
    await c.ok("create_queue", {"name": "later"})
    for body in (b"a", b"b", b"c"):
        await c.ok("send_message", {"queue": "q", "body": body})
    holder = await c.send("queue_subscribe", {"queue": "q", "subscription": 1, "prefetch": 2})
    got = await c.ok("queue_deliver", {"subscription": 1})
    assert [m["body"] for m in got["messages"]] == [b"a", b"b"]
    receive = await c.send("receive_messages", {"queue": "later", "wait_ms": 10_000})
    t0 = trio.current_time()
    await c.stream.send_eof()
    cid, code, body = await c.receive()
    assert (cid, code, body["name"]) == (holder, errors.ConnectionClosedError.code, "CONNECTION_CLOSED")
    assert trio.current_time() == t0
    info = await other.ok("get_queue_attributes", {"name": "q"})
    assert (info["messages_visible"], info["messages_in_flight"]) == (3, 0)
    assert harness.broker.engine.push.subscriptions == {}
    await other.ok("send_message", {"queue": "later", "body": b"z"})
    cid, code, body = await c.receive()
    assert (cid, code, [m["body"] for m in body["messages"]]) == (receive, 0, [b"z"])


async def test_a_subscriber_that_never_reads_holds_its_window_only_and_others_are_served(nursery, tmp_path):
    h = await start_harness(nursery, tmp_path, connection_outbox_bytes_max=4 * MB)
    other = await h.connect()
    await other.ok("create_queue", {"name": "q", "visibility_timeout_ms": 3_600_000})
    for i in range(20):
        await other.ok("send_message", {"queue": "q", "body": bytes([i]) * (MB - 100)})
    client_side, server_side = trio.testing.lockstep_stream_pair()
    h.nursery.start_soon(h.broker.serve_stream, server_side)
    slow = RawClient(client_side)
    await slow.ok("hello", {"protocol_version": 1, "client_id": "slow"})
    flood = [encode_request(2, "queue_subscribe", {"queue": "q", "subscription": 1, "prefetch": 3})]
    flood += [encode_request(3 + i, "queue_deliver", {"subscription": 1, "wait_ms": 20_000}) for i in range(2000)]
    sending = trio.CancelScope()

    async def pipeline() -> None:
        with sending:
            await slow.stream.send_all(b"".join(flood))

    nursery.start_soon(pipeline)
    await trio.testing.wait_all_tasks_blocked()
    [conn] = [c for c in h.broker.connections if c.statistics().unsent_bytes]
    assert conn.statistics().unsent_bytes <= 4 * MB + 2 * (MB + 1024)
    info = await other.ok("get_queue_attributes", {"name": "q"})
    assert (info["messages_in_flight"], info["messages_visible"]) == (3, 17)  # its window, and no more
    got = await other.ok("receive_messages", {"queue": "q", "max_messages": 5, "visibility_timeout_ms": 0})
    assert len(got["messages"]) == 5  # meanwhile everyone else is served
    sending.cancel()
    await slow.stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert conn.closed and h.broker.engine.push.subscriptions == {}
    info = await other.ok("get_queue_attributes", {"name": "q"})
    assert (info["messages_in_flight"], info["messages_visible"]) == (0, 20)  # at once, not in an hour
    await h.broker.shutdown()


async def test_peers_resetting_mid_delivery_do_not_stop_the_broker_and_hand_their_messages_back(tmp_path):
    async with open_broker(tmp_path / "d", fsync="never") as b:
        c = await trio.open_tcp_stream(b.host, b.port)
        raw = RawClient(c)
        await raw.ok("hello", {"protocol_version": 1, "client_id": "ok"})
        await raw.ok("create_queue", {"name": "q", "visibility_timeout_ms": 3_600_000})
        for i in range(50):
            await raw.ok("send_message", {"queue": "q", "body": bytes([i]) * 100_000})
        for round_ in range(10):
            hostile = await trio.open_tcp_stream(b.host, b.port)
            out = [encode_request(1, "hello", {"protocol_version": 1, "client_id": "hostile"})]
            out += [encode_request(2 + i, "queue_subscribe", {"queue": "q", "subscription": i, "prefetch": 10})
                    for i in range(5)]
            out += [encode_request(10 + i, "queue_deliver", {"subscription": i % 5, "wait_ms": 0})
                    for i in range(20)]
            await hostile.send_all(b"".join(out))
            if round_ % 2:
                await hostile.receive_some(100)  # reset mid-answer
            await trio.sleep(0.05)
            hostile.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
            await hostile.aclose()
            assert (await raw.ok("list_queues", {}))["queues"] == ["q"]
        with trio.fail_after(10):
            while b.statistics().connections > 1:
                await trio.sleep(0.01)
        info = await raw.ok("get_queue_attributes", {"name": "q"})
        assert (info["messages_visible"], info["messages_in_flight"]) == (50, 0)
        assert b.engine.push.subscriptions == {}
        await c.aclose()
