# Connecting to something that listens but is no millpond broker (a web server waiting for its request, a server
# that greets with its own banner): one clear error naming the address, soon, not REQUEST_TIMED_OUT or
# FRAME_TOO_LARGE; a host name that does not resolve named as such; the CLI prints each as one line.
from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from millpond.client.errors import ConnectionClosedError
from millpond.client.sync import connect


class Listener:
    """A loopback server that greets each connection with ``banner`` (maybe nothing) and then holds it open."""

    def __init__(self, banner: bytes) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.banner = banner
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed: the test is over
                return
            conn.sendall(self.banner)
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize(("banner", "why"), [
    (b"", "no answer to the handshake within 0.5 s"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", r"the handshake failed \(.*FRAME_TOO_LARGE"),
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", r"the handshake failed \(.*FRAME_TOO_LARGE"),
])
def test_something_else_listening_is_named_as_such(banner, why):
    server = Listener(banner)
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionClosedError) as info:
            connect(server.address, connect_timeout_s=0.5)
        assert time.monotonic() - started < 5
        assert info.value.message.startswith(f"cannot connect to {server.address}: ")
        assert info.value.message.endswith("; is it a millpond broker?")
        assert re.search(why, info.value.message), info.value.message
    finally:
        server.close()


def test_the_cli_says_it_in_one_line():
    server = Listener(b"SSH-2.0-OpenSSH_9.6\r\n")
    try:
        r = subprocess.run([sys.executable, "-m", "millpond.broker.cli", "topics", "list", "-b", server.address],
                           capture_output=True, timeout=60)
    finally:
        server.close()
    assert r.returncode == 1
    lines = r.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"millpond topics: cannot connect to {server.address}: ")
    assert lines[0].endswith("is it a millpond broker?")


class _Http:
    """A real HTTP server (the stdlib's) in a thread: it waits for a request line that a millpond hello never
    sends."""

    def __init__(self) -> None:
        import http.server

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
        self.server.daemon_threads = True
        self.address = "127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("make", [lambda: Listener(b""), _Http], ids=["silent", "http"])
def test_a_silent_peer_is_named_after_the_handshake_bound_not_the_connect_timeout(make):
    from millpond.client._connection import HANDSHAKE_TIMEOUT_S

    server = make()
    try:
        with pytest.raises(ConnectionClosedError) as info:
            connect(server.address)  # the default connect_timeout_s, 10 s
        r = subprocess.run([sys.executable, "-m", "millpond.broker.cli", "topics", "list", "-b", server.address],
                           capture_output=True, timeout=60)
    finally:
        server.close()
    why = f"cannot connect to {server.address}: no answer to the handshake within {HANDSHAKE_TIMEOUT_S:g} s (a " \
          "millpond broker out of file descriptors accepts no connection: its log says so); is it a millpond broker?"
    assert info.value.message == why
    assert (r.returncode, r.stderr.decode()) == (1, f"millpond topics: {why}\n")


@pytest.mark.parametrize("host", ["nohost.invalid", "no-such-host.invalid"])
def test_a_host_name_that_does_not_resolve_is_named(host):
    with pytest.raises(ConnectionClosedError) as info:
        connect(f"{host}:1")
    assert info.value.message.startswith(f"cannot connect to {host}:1: host name '{host}' does not resolve (")
    r = subprocess.run([sys.executable, "-m", "millpond.broker.cli", "topics", "list", "-b", f"{host}:1"],
                       capture_output=True, timeout=60)
    lines = r.stderr.decode().splitlines()
    assert r.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"millpond topics: cannot connect to {host}:1: host name '{host}' does not resolve (")
    assert "unknown error" not in lines[0].lower()
