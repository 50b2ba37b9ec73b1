# `millpond serve --sync-method` reaches the broker's config (flags win over the file), and a wrong value is refused
# by name before anything starts.
from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from millpond.broker.cli import main, serve
serve.trio.run = lambda fn, broker: print(broker.config.sync_method)  # the broker would start here
sys.exit(main(["serve", "--data-dir", sys.argv[1], "--port", "0", *sys.argv[2:]]))
"""


def serve(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "d"), *args], capture_output=True, text=True,
                          timeout=60)


def test_the_flag_and_the_file_set_the_sync_method(tmp_path):
    assert serve(tmp_path).stdout.strip() == "auto"
    assert serve(tmp_path, "--sync-method", "fsync").stdout.strip() == "fsync"
    config = tmp_path / "m.toml"
    config.write_text('sync_method = "fsync"\n')
    assert serve(tmp_path, "--config", str(config)).stdout.strip() == "fsync"
    assert serve(tmp_path, "--config", str(config), "--sync-method", "auto").stdout.strip() == "auto"


def test_a_wrong_sync_method_is_refused_by_name(tmp_path):
    r = serve(tmp_path, "--sync-method", "fast")
    assert r.returncode == 2 and "--sync-method" in r.stderr and "'fast'" in r.stderr
    config = tmp_path / "m.toml"
    config.write_text('sync_method = "fast"\n')
    r = serve(tmp_path, "--config", str(config))
    assert r.returncode == 2 and "sync_method must be one of auto, fsync, syncfs, got 'fast'" in r.stderr
