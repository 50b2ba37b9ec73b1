# The README's limit plug-in example as a user runs it: the operator registers examples/limits_plugin.py with
# `millpond serve --limit-algorithm`, a client names it in `millpond limits set`; a client naming an import path
# instead is refused and the broker imports nothing (issue 10 finding 8).
from __future__ import annotations

import os
import re
import selectors
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from clikit import mp

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def readme_command(prefix: str) -> list[str]:
    found = re.search(rf"`(?:PYTHONPATH=\. )?({re.escape(prefix)}[^`]*)`", README)
    assert found, prefix
    return shlex.split(found.group(1))[1:]  # without the word millpond


def test_the_readme_plugin_example_works_and_nothing_else_is_imported(tmp_path):
    serve = readme_command("millpond serve --data-dir ./data --limit-algorithm")
    serve[serve.index("./data")] = str(tmp_path / "data")
    marker = tmp_path / "imported"
    (tmp_path / "trap_module.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    path = [str(ROOT), str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    with open(tmp_path / "serve.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "millpond.broker.cli", *serve, "--port", "0"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(20), (tmp_path / "serve.log").read_text()
        line = proc.stdout.readline()
        assert line.startswith("millpond listening on "), (tmp_path / "serve.log").read_text()
        broker = ["--broker", line.split()[-1]]
        r = mp(*readme_command("millpond limits set plan --scope"), *broker)
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().startswith("set limit policy plan: client:* records capped ")
        r = mp("limits", "set", "evil", "--scope", "client:*", "--algorithm", "trap_module:X", *broker)
        assert r.returncode == 1 and b"INVALID_CONFIG" in r.stderr and b"registered by the broker's operator" in r.stderr
        assert not marker.exists()
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
    assert proc.returncode == 0 and "Traceback" not in (tmp_path / "serve.log").read_text()


def test_a_bad_limit_algorithm_flag_stops_serve_with_one_line(tmp_path):
    for flag, words in (("capped", "NAME=package.module:Class"), ("capped=no_such_module:X", "no_such_module"),
                        ("leaky_bucket=examples.limits_plugin:CappedLeakyBucket", "built-in")):
        r = mp("serve", "--data-dir", str(tmp_path / "d"), "--port", "0", "--limit-algorithm", flag)
        assert r.returncode == 2 and words.encode() in r.stderr and b"Traceback" not in r.stderr, r.stderr
