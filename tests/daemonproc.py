# Starting the broker as a real process for tests: `python -m broker.cli serve --port 0`, with a bounded wait for
# the line that says where it listens.
from __future__ import annotations

import selectors
import subprocess
import sys
from pathlib import Path

START_TIMEOUT_S = 20


def start_daemon(data_dir: Path, log: Path) -> tuple[subprocess.Popen, int]:
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "serve", "--data-dir", str(data_dir), "--port",
                                 "0", "--fsync", "never"], stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:  # bounded wait for a real process
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(START_TIMEOUT_S)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("millpond listening on "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"daemon did not start: {line!r} {log.read_text()}")
    return proc, int(line.rsplit(":", 1)[1])
