# Starting the broker as a real process for tests: `python -m broker.cli serve`, with a bounded wait for the line
# that says where it listens, and stopping it. Used by the `daemon` fixtures (tests/conftest.py, and the factory in
# tests/daemon/conftest.py) and by tests that restart a broker on a fixed port.
from __future__ import annotations

import selectors
import subprocess
import sys
from pathlib import Path

START_TIMEOUT_S = 20


def start_daemon(data_dir: Path, log: Path, *extra: str, port: int = 0, fsync: str | None = "never",
                 log_mode: str = "w") -> tuple[subprocess.Popen, int]:
    """Start a broker on ``data_dir`` (``--fsync fsync`` unless None: the daemon's own default) with ``extra``
    arguments; its stderr goes to ``log`` (a pipe nobody reads would fill up and stall its logging). Returns the
    process and the port it listens on."""
    args = ["serve", "--data-dir", str(data_dir), "--port", str(port)]
    if fsync is not None:
        args += ["--fsync", fsync]
    with open(log, log_mode) as err:
        proc = subprocess.Popen([sys.executable, "-m", "millpond.broker.cli", *args, *extra], stdout=subprocess.PIPE,
                                stderr=err, text=True)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:  # bounded wait for a real process
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(START_TIMEOUT_S)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("millpond listening on "):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise RuntimeError(f"daemon did not start: {line!r} {log.read_text()}")
    return proc, int(line.rsplit(":", 1)[1])


def stop_daemon(proc: subprocess.Popen, timeout_s: float = 10) -> None:
    """SIGTERM, a bounded wait, SIGKILL if it did not stop; then close its stdout pipe."""
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
