# A small HTTP endpoint on Trio's sockets and h11 for the webhook tests: scripted status codes, an optional delay,
# every request kept.
from __future__ import annotations

import functools

import h11
import trio


class Hook:
    """An HTTP endpoint: answers the n-th request with ``statuses[n]`` (the last repeats) after ``delay_s``;
    ``got`` holds each request's (headers, body) as it arrives."""

    def __init__(self, statuses: list[int], delay_s: float = 0.0) -> None:
        self.statuses = list(statuses)
        self.delay_s = delay_s
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.answered = 0
        self.changed = trio.Event()
        self.port = 0

    async def start(self, nursery: trio.Nursery, host: str = "127.0.0.1") -> str:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, self.serve, 0, host=host))
        self.port = listeners[0].socket.getsockname()[1]
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/hook"

    async def wait_for(self, requests: int, timeout_s: float = 10.0) -> None:
        with trio.fail_after(timeout_s):
            while len(self.got) < requests:
                await self.changed.wait()

    async def serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        headers: dict[str, str] = {}
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                headers, body = {k.decode().lower(): v.decode() for k, v in event.headers}, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                n = len(self.got)
                self.got.append((headers, body))
                self.changed.set()
                self.changed = trio.Event()
                await trio.sleep(self.delay_s)
                status = self.statuses[min(n, len(self.statuses) - 1)]
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=[("content-length", "0")])))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                self.answered += 1
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
            else:  # ConnectionClosed
                return
