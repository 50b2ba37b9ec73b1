# Accepting TCP connections. Owns the file-descriptor budget: at start the open-file limit (RLIMIT_NOFILE) is raised
# to its hard limit, as servers do, and connections_max is capped by it less a reserve for the log's files; the
# last slot is kept for a loopback (administrator) connection; running out of descriptors on accept (EMFILE,
# ENFILE, ENOBUFS, ENOMEM) is logged and retried after a short back-off, never an exit. Knows no protocol: each
# accepted stream is handed to the broker's connection task.
from __future__ import annotations

import errno
import ipaddress
import logging
import math
from typing import Awaitable, Callable

import trio

log = logging.getLogger("millpond.server")

try:
    import resource
except ImportError:  # not POSIX: no descriptor limit to read or raise
    resource = None  # type: ignore[assignment]

# accept() failures that mean "out of descriptors or memory for now": wait, then accept again.
CAPACITY_ERRNOS = frozenset(
    getattr(errno, name) for name in ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM") if hasattr(errno, name)
)
ACCEPT_BACKOFF_S = 0.1
# At most one log line per this many seconds for refused connections and accept failures (a flood is one line).
LOG_EVERY_S = 10.0
ADMIN_SLOTS = 1

Handle = Callable[[trio.SocketStream, str], Awaitable[None]]


def raise_fd_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force (None: unlimited, or
    no such limit on this system)."""
    if resource is None:
        return None
    inf = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # macOS refuses an unlimited soft limit (its per-process maximum is OPEN_MAX, 10240): then try that.
    for target in (hard, 10240):
        if soft == inf or (target != inf and target <= soft):
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        soft = target
        break
    return None if soft == inf else soft


def connections_budget(configured: int, fd_soft: int | None, fds_reserved: int) -> int:
    """``configured``, capped at the descriptors left once ``fds_reserved`` (at most half the limit) is kept for
    files; at least one."""
    if fd_soft is None:
        return configured
    return max(1, min(configured, fd_soft - min(fds_reserved, fd_soft // 2)))


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def peer_of(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except (OSError, ValueError, TypeError, AttributeError):
        return "?"
    return f"{host}:{port}"


class Listener:
    """TCP listening sockets and the accept loops over them. ``open`` (before anything else starts), then
    ``serve`` in a task until ``stop``; connections are run by ``handle`` in the nursery given to ``serve``, so
    stopping the listener does not end them."""

    def __init__(self, sockets: list[trio.SocketListener], connections_max: int) -> None:
        self.sockets = sockets
        self.connections_max = connections_max
        self.connections = 0  # accepted and not yet ended
        self.refused = 0
        self.accept_errors = 0
        sockname = sockets[0].socket.getsockname()
        self.address: tuple[str, int] = (sockname[0], sockname[1])
        self._scope = trio.CancelScope()
        self._last_log = {"refused": -math.inf, "accept": -math.inf}

    @classmethod
    async def open(cls, host: str, port: int, *, connections_max: int, fds_reserved: int) -> "Listener":
        """Raise the descriptor limit, derive connections_max, listen. Raises ``OSError`` naming the address."""
        fd_soft = raise_fd_limit()
        budget = connections_budget(connections_max, fd_soft, fds_reserved)
        if budget < connections_max:
            log.info("connections_max %d -> %d: open-file limit %s, %d kept for files", connections_max, budget,
                     fd_soft, min(fds_reserved, (fd_soft or 0) // 2))
        try:
            sockets = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
        return cls(sockets, budget)

    def stop(self) -> None:
        """Stop accepting (``serve`` closes the sockets and returns); accepted connections go on."""
        self._scope.cancel()

    async def aclose(self) -> None:
        """Close the sockets without serving (e.g. startup failed after ``open``)."""
        self._scope.cancel()
        for sock in self.sockets:
            await sock.aclose()

    async def serve(self, handle: Handle, nursery: trio.Nursery) -> None:
        """Accept until ``stop()``; each admitted connection runs as ``handle(stream, peer)`` in ``nursery``."""
        try:
            with self._scope:
                async with trio.open_nursery() as accepting:
                    for sock in self.sockets:
                        accepting.start_soon(self._accept_loop, sock, handle, nursery)
        finally:
            with trio.CancelScope(shield=True):
                for sock in self.sockets:
                    await sock.aclose()

    async def _accept_loop(self, sock: trio.SocketListener, handle: Handle, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await sock.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                # Out of descriptors (EMFILE, ENFILE) or kernel memory: the waiting peers stay in the backlog and
                # are accepted once descriptors are free again. Anything else unexpected is treated the same way
                # (logged, retried later) rather than ending the broker.
                self.accept_errors += 1
                self._log_rarely("accept", "accept failed: %s (%d time(s) so far); retrying every %g s",
                                 exc, self.accept_errors, ACCEPT_BACKOFF_S)
                await trio.sleep(ACCEPT_BACKOFF_S if exc.errno in CAPACITY_ERRNOS else 1.0)
                continue
            peer = peer_of(stream)
            free = self.connections_max - self.connections
            if free <= 0 or (free <= ADMIN_SLOTS and not is_loopback(peer.rsplit(":", 1)[0])):
                self.refused += 1
                self._log_rarely("refused", "refusing connections: connections_max=%d reached (%d refused)",
                                 self.connections_max, self.refused)
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                continue
            self.connections += 1
            nursery.start_soon(self._run, handle, stream, peer)

    async def _run(self, handle: Handle, stream: trio.SocketStream, peer: str) -> None:
        try:
            await handle(stream, peer)
        finally:
            self.connections -= 1

    def _log_rarely(self, kind: str, message: str, *args: object) -> None:
        now = trio.current_time()
        if now - self._last_log[kind] >= LOG_EVERY_S:
            self._last_log[kind] = now
            log.warning(message, *args)


__all__ = ["Listener", "connections_budget", "raise_fd_limit"]
