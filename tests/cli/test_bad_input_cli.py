# Bad input as a user types it (issue 10 finding 9): `millpond topics create` with a negative retention or segment
# age (one clear line and exit 1, nothing created; -1 still keeps forever), and `millpond serve` on a data
# directory that is a file (one line naming the file, not just "File exists").
from __future__ import annotations

import json

import pytest

from clikit import mp

pytestmark = pytest.mark.slow


def test_negative_seconds_are_refused_and_minus_one_keeps_forever(daemon):
    b = ["--broker", daemon]
    for flag, value, words in (("--retention-s", "-5", "retention_s must be >= 0 seconds, or -1 to keep forever"),
                               ("--retention-s", "-0.5", "retention_s must be >= 0 seconds, or -1 to keep forever"),
                               ("--segment-s", "-1", "segment_s must be >= 0 seconds")):
        r = mp("topics", "create", "t", f"{flag}={value}", *b)
        assert r.returncode == 1 and r.stderr.decode().strip() == f"millpond topics: INVALID_CONFIG: {words}, got " \
            f"{float(value)}", r.stderr
    assert mp("topics", "list", *b).stdout.split() == []
    r = mp("topics", "create", "t", "--retention-s=-1", *b)
    assert r.returncode == 0, r.stderr
    assert json.loads(mp("topics", "describe", "t", "--json", *b).stdout)["config"]["retention_s"] == -1


def test_serve_on_a_data_directory_that_is_a_file_says_so(tmp_path):
    (tmp_path / "data").write_text("not a directory")
    for where, words in ((tmp_path / "data", f"{tmp_path / 'data'} is a file, not a directory"),
                         (tmp_path / "data" / "sub", f"a part of {tmp_path / 'data' / 'sub'} is a file")):
        r = mp("serve", "--data-dir", str(where), "--port", "0")
        assert r.returncode == 1 and r.stderr.decode().startswith(
            f"millpond serve: cannot open data directory {where}: {words}"), r.stderr
        assert b"Traceback" not in r.stderr and len(r.stderr.decode().strip().splitlines()) == 1


def test_serve_on_a_taken_port_fails_before_touching_the_data_directory(tmp_path):
    import socket

    from millpond import run_broker

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        r = mp("serve", "--data-dir", str(tmp_path / "data"), "--port", str(port))
        assert r.returncode == 1
        assert r.stderr.decode() == f"millpond serve: cannot listen on 127.0.0.1:{port}: Address already in use\n"
        with pytest.raises(OSError):
            run_broker(tmp_path / "embedded", port=port)
    # neither the data directory nor the offsets topic was made for a broker that never listened
    assert not (tmp_path / "data").exists() and not (tmp_path / "embedded").exists()
