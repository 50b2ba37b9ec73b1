# The broker as a real daemon process (`python -m broker.cli serve`) and a blocking raw-protocol client, for the
# tests where the process itself is under test: signals, restart, kill -9.
from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from millpond.broker.wire.frames import FrameDecoder, decode_response, encode_request

from tests.daemonproc import start_daemon


class Daemon:
    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.clients: list[BlockingClient] = []

    def start(self) -> "Daemon":
        # the daemon's own fsync default (no --fsync unless given in extra): the kill -9 test relies on it
        self.stderr_path = self.data_dir.parent / f"daemon-{id(self)}.log"
        self.proc, self.port = start_daemon(self.data_dir, self.stderr_path, *self.extra, fsync=None)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def client(self) -> "BlockingClient":
        c = BlockingClient(("127.0.0.1", self.port))
        self.clients.append(c)
        return c


class BlockingClient:
    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = FrameDecoder(1 << 30)
        self.ids = itertools.count(1)
        self.pending: list[bytes] = []
        assert self.call("hello", {"protocol_version": 1, "client_id": "daemon-test"})[0] == 0

    def send(self, api: str, body: dict[str, Any]) -> int:
        cid = next(self.ids)
        self.sock.sendall(encode_request(cid, api, body))
        return cid

    def receive(self) -> tuple[int, int, Any]:
        while not self.pending:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("broker closed the connection")
            self.pending.extend(self.decoder.feed(data))
        return decode_response(self.pending.pop(0))

    def call(self, api: str, body: dict[str, Any]) -> tuple[int, Any]:
        cid = self.send(api, body)
        rcid, code, answer = self.receive()
        assert rcid == cid
        return code, answer

    def ok(self, api: str, body: dict[str, Any]) -> Any:
        code, answer = self.call(api, body)
        assert code == 0, answer
        return answer

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def daemon(tmp_path: Path):
    started: list[Daemon] = []

    def make(*extra: str, data_dir: Path | None = None) -> Daemon:
        d = Daemon(data_dir or tmp_path / "data", *extra).start()
        started.append(d)
        return d

    yield make
    for d in started:
        if d.proc is not None:
            if d.proc.poll() is None:
                os.kill(d.proc.pid, signal.SIGKILL)
                d.proc.wait()
            if d.proc.stdout is not None:
                d.proc.stdout.close()
        for c in d.clients:
            c.close()
