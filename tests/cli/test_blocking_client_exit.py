# A script that opens the blocking client without `with` and never closes it still exits when it ends: the client
# is closed as the main thread finishes (its loop thread would otherwise keep the interpreter waiting for ever).
from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

SCRIPT = """
import sys
from millpond.client.sync import connect
c = connect(sys.argv[1])
c.create_topic("left-open")
print(c.list_topics())
p = c.producer()
p.send("left-open", b"x")
p.flush()
print("end of script")
"""


def test_a_client_left_open_does_not_keep_the_script_alive(daemon):
    r = subprocess.run([sys.executable, "-c", SCRIPT, daemon], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["['left-open']", "end of script"]
    assert "Traceback" not in r.stderr
