# README.md's Python snippets run as a reader would paste them: the async one under Trio and under asyncio, the
# blocking one, and the thread-embedded broker, each as a plain script in a subprocess.
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from millpond.client.sync import connect

pytestmark = pytest.mark.slow

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def block(*words: str) -> str:
    found = [b for b in BLOCKS if all(w in b for w in words)]
    assert len(found) == 1, words
    return found[0]


def run(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "snippet.py"
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # and quietly: no warning, no log line
    return done


@pytest.mark.parametrize("runner", ["trio", "asyncio"])
def test_the_async_snippet(daemon, tmp_path, runner):
    script = block("trio.run(main)", "await producer.send").replace("127.0.0.1:7420", daemon)
    if runner == "asyncio":
        script = "import asyncio\n" + script.replace("trio.run(main)", "asyncio.run(main())")
    out = run(script, tmp_path).stdout.splitlines()
    with connect(daemon) as c:
        d = c.describe_topic("orders")
        assert len(d.partitions) == 3 and d.records == 10_001
    first = out[0].split()
    assert len(out) == 2 and int(first[1]) == 0 and out[1].split()[1:] == ["0", "b'customer-7'", "b'{\"id\":", "1}'"]


def test_the_blocking_snippet(daemon, tmp_path):
    # alone, on a broker that has never seen the topic (pasted on its own, it must not lose the records)
    (tmp_path / "numbers.txt").write_bytes(b"".join(b"%d\n" % i for i in range(1, 101)))
    script = block("millpond.client.sync import connect", "numbers.txt").replace("127.0.0.1:7420", daemon)
    out = run(script, tmp_path).stdout.splitlines()
    with connect(daemon) as c:
        assert c.describe_topic("orders").records == 100
    values = [int(ast.literal_eval(v)) for v in out]  # three partitions: any ten of the lines, each once
    assert len(values) == len(set(values)) == 10 and set(values) <= set(range(1, 101))


def test_the_thread_embedded_broker_runs_in_a_plain_script_and_under_asyncio(tmp_path):
    out = run(block("run_broker("), tmp_path).stdout
    assert out == "['jobs']\n"


def test_the_fanout_snippet_runs_alone_and_delivers_into_both_queues(daemon, tmp_path):
    snippet = block('c.subscribe("uploads"', "describe_subscription")
    body = "".join("        " + line + "\n" for line in snippet.splitlines())
    script = ("import trio\nfrom millpond.client import connect\n\n\nasync def main():\n"
              f"    async with connect({daemon!r}) as c:\n{body}        print(d.delivered)\n\n\ntrio.run(main)\n")
    run(script, tmp_path)
    with connect(daemon) as c:
        raw = c.queue("notify").receive(10, wait_s=10)
        envelope = c.queue("compress").receive(10, wait_s=10)
    assert [m.body for m in raw] == [b'{"id": 7}'] and raw[0].attributes["kind"] == "video"
    assert len(envelope) == 1 and b'"Message"' in envelope[0].body and b"user-7" in envelope[0].body
