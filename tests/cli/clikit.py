# The `millpond` command as a user runs it, for the CLI test files: a subprocess with a bounded wait. (A uniquely
# named module rather than conftest, so test files can import it.)
from __future__ import annotations

import subprocess
import sys


def mp(*args: str, stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "millpond.broker.cli", *args], input=stdin, capture_output=True,
                          timeout=timeout)
