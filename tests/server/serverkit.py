# A broker served over in-memory streams (virtual time works: no real socket, no real fsync wait) and a raw
# protocol client that sends exact frames, so the server is tested without the client package.
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from millpond.broker.config import load_config
from millpond.broker.server.broker import Broker
from millpond.broker.wire.frames import FrameDecoder, decode_response, encode_request


class RawClient:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(1 << 30)
        self.ids = itertools.count(1)
        self.pending: list[bytes] = []

    async def send_bytes(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send(self, api: str, body: dict[str, Any]) -> int:
        cid = next(self.ids)
        await self.stream.send_all(encode_request(cid, api, body))
        return cid

    async def receive(self) -> tuple[int, int, Any]:
        while not self.pending:
            data = await self.stream.receive_some(1 << 20)
            if not data:
                raise EOFError("broker closed the connection")
            self.pending.extend(self.decoder.feed(data))
        return decode_response(self.pending.pop(0))

    async def call(self, api: str, body: dict[str, Any]) -> tuple[int, Any]:
        cid = await self.send(api, body)
        rcid, code, answer = await self.receive()
        assert rcid == cid
        return code, answer

    async def ok(self, api: str, body: dict[str, Any]) -> Any:
        code, answer = await self.call(api, body)
        assert code == 0, answer
        return answer


class Harness:
    def __init__(self, broker: Broker, nursery: trio.Nursery) -> None:
        self.broker = broker
        self.nursery = nursery

    async def connect(self, hello: bool = True) -> RawClient:
        client_side, server_side = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.broker.serve_stream, server_side)
        client = RawClient(client_side)
        if hello:
            await client.ok("hello", {"protocol_version": 1, "client_id": "test"})
        return client


async def start_harness(nursery: trio.Nursery, data_dir: Path, **overrides: Any) -> Harness:
    config = load_config(None, data_dir=str(data_dir), **{"fsync": "never", **overrides})
    broker = Broker(config, data_dir)
    await nursery.start(lambda task_status: broker.serve(listen=False, task_status=task_status))
    return Harness(broker, nursery)


