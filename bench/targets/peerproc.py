# What every peer target (Redis, NATS, RabbitMQ) needs to run a server of its own: a free 127.0.0.1 port, a start
# that waits for readiness with a bound and turns failure into PeerUnavailable (a skip with a message, never a
# crash or a fake figure), a stop by process id, the "is it installed" check with the install hint, and latency
# sampling for the batch-acknowledged produce loops. Must not know any one peer's protocol or how figures are made.
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from millpond.bench import stats
from millpond.bench.targets import PeerUnavailable

INSTALL_HINT = "see bench/peers/README.md"
BATCH_RECORDS = 1000  # records per pipeline / publish-confirm batch / fetch, as bench/peers/README.md describes
SBIN = ("/usr/sbin", "/usr/lib/rabbitmq/bin")  # Debian puts some servers here, outside a normal user's PATH


def find_binary(name: str) -> str | None:
    return shutil.which(name) or next((str(Path(d) / name) for d in SBIN if (Path(d) / name).exists()), None)


def missing(binaries: Sequence[tuple[str, str]], modules: Sequence[tuple[str, str]]) -> str | None:
    """One line naming each absent piece and how to get it, or None. ``binaries``: (program, apt package);
    ``modules``: (import name, pip package)."""
    gone = [f"{prog} not found (apt-get install {pkg})" for prog, pkg in binaries if not find_binary(prog)]
    absent = [pip for mod, pip in modules if importlib.util.find_spec(mod) is None]
    if absent:
        gone.append(f"Python package{'s' if len(absent) > 1 else ''} {', '.join(absent)} not installed "
                    f"(pip install 'millpond[peers]')")
    return "; ".join(gone) + f"; {INSTALL_HINT}" if gone else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def version_of(argv: list[str]) -> str:
    """First line of ``argv``'s output (e.g. ``redis-server --version``), or '?'."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def start(name: str, argv: list[str], *, log_path: Path, ready: Callable[[], bool], timeout_s: float,
          env: dict[str, str] | None = None, cwd: str | None = None) -> subprocess.Popen:
    """Start ``argv`` (stdout and stderr to ``log_path``) in a session of its own; poll ``ready()`` every 0.1 s
    until it is true, at most ``timeout_s``. On exit or timeout: stop it and raise PeerUnavailable with its log."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)
    give_up = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            why = f"exited with status {proc.returncode}"
            break
        try:
            if ready():
                return proc
        except Exception:  # not listening yet, or not answering yet
            pass
        if time.monotonic() >= give_up:
            why = f"not ready after {timeout_s:g} s"
            break
        time.sleep(0.1)
    stop(proc)
    tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])
    raise PeerUnavailable(f"{name} did not start ({why}); last log lines: {tail[-400:]}")


def stop(proc: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM the process (its own shutdown), then SIGKILL its process group (the session ``start`` made)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever it left behind in its session (e.g. Erlang's helpers)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(5)


def port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def child_pid(parent: int, comm: str) -> int | None:
    """The pid of a direct child of ``parent`` whose command name is ``comm`` (from /proc), or None."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, rest = (entry / "stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        if head.split("(", 1)[1] == comm and int(rest.split()[1]) == parent:
            return int(entry.name)
    return None


class Sampler:
    """Ack latency for batch-acknowledged produce loops, sampled like the millpond target: one record in
    ``every`` is timed from when it was handed to the client until its batch was seen acknowledged."""

    def __init__(self, every: int) -> None:
        self.every = max(1, every)
        self.hist = stats.new_histogram()
        self.pending: list[int] = []

    def chunks(self, start: int, stop: int) -> Iterator[range]:
        """``range(start, stop)`` in runs of ``every`` records, the first record of each timed as it is handed over
        (no per-record cost in the loop)."""
        for c in range(start, stop, self.every):
            self.pending.append(time.perf_counter_ns())
            yield range(c, min(c + self.every, stop))

    def acked(self) -> None:
        now = time.perf_counter_ns()
        for t in self.pending:
            stats.record_us(self.hist, (now - t) / 1000)
        self.pending.clear()

    def encoded(self) -> bytes:
        return stats.encode(self.hist)
