# `millpond subscriptions ...` and `millpond publish` as a user runs them: subprocesses against a broker subprocess.
from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from clikit import mp

pytestmark = pytest.mark.slow


def _receive(b, queue, expected):
    rows = []
    for _ in range(50):
        r = mp("receive", queue, "--max", "100", "--wait-s", "0.2", "--json", *b)
        rows += [json.loads(line) for line in r.stdout.splitlines()]
        if len(rows) >= expected:
            break
        time.sleep(0.1)
    return rows


def test_subscriptions_create_list_describe_delete_and_publish(daemon):
    b = ["--broker", daemon]
    assert mp("topics", "create", "orders", "--partitions", "2", *b).returncode == 0
    for q in ("eu", "all"):
        assert mp("queues", "create", q, *b).returncode == 0
    r = mp("subscriptions", "create", "orders", "--queue", "eu", "--raw", "--filter-policy",
           '{"region": ["eu"]}', *b)
    assert r.returncode == 0 and r.stdout.startswith(b"subscription "), r.stderr
    eu = r.stdout.split()[1].rstrip(b":").decode()
    r = mp("subscriptions", "create", "orders", "--queue", "all", *b)
    all_ = r.stdout.split()[1].rstrip(b":").decode()
    r = mp("publish", "orders", "o-1", "--header", "region=eu", "--key", "c1", *b)
    assert r.returncode == 0 and r.stdout.startswith(b"published to orders partition "), r.stderr
    assert mp("publish", "orders", "o-2", "-H", "region=us", *b).returncode == 0
    rows = _receive(b, "eu", 1)
    assert [(row["body"], row["attributes"]) for row in rows] == [("o-1", {"region": "eu"})]
    rows = _receive(b, "all", 2)
    assert sorted(json.loads(row["body"])["Message"] for row in rows) == ["o-1", "o-2"]

    listed = json.loads(mp("subscriptions", "list", "orders", "--json", *b).stdout)
    assert {s["id"] for s in listed} == {eu, all_}
    assert mp("subscriptions", "list", *b).stdout.count(b"orders -> ") == 2
    d = json.loads(mp("subscriptions", "describe", eu, "--json", *b).stdout)
    assert (d["delivered"], d["filtered_out"], d["lag"]) == (1, 1, 0)
    text = mp("subscriptions", "describe", eu, *b).stdout
    assert text.startswith(f"subscription {eu}: topic orders -> queue eu\ndelivered 1, filtered out 1".encode())

    r = mp("subscriptions", "create", "orders", "--queue", "eu", "--filter-policy", '{"region": "eu"}', *b)
    assert r.returncode == 1 and r.stderr.startswith(b"millpond subscriptions: INVALID_PARAMETER_VALUE")
    assert b"region" in r.stderr and b"Traceback" not in r.stderr
    r = mp("subscriptions", "create", "orders", "--queue", "eu", "--start", "soon", *b)
    assert r.returncode == 2 and b"--start" in r.stderr
    r = mp("publish", "orders", "x", "--header", "novalue", *b)
    assert r.returncode == 2 and b"NAME=VALUE" in r.stderr
    assert mp("subscriptions", "delete", eu, *b).stdout == f"deleted subscription {eu}\n".encode()
    r = mp("subscriptions", "describe", eu, *b)
    assert r.returncode == 1 and r.stderr.startswith(b"millpond subscriptions: UNKNOWN_SUBSCRIPTION")


def test_subscriptions_create_with_a_url_posts_each_record_to_the_webhook(daemon):
    got: list[tuple[dict[str, str], bytes]] = []
    arrived = threading.Event()

    class Endpoint(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            got.append(({k.lower(): v for k, v in self.headers.items()},
                        self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(500 if len(got) == 1 else 200)  # the first attempt fails
            self.send_header("Content-Length", "0")
            self.end_headers()
            if len(got) == 2:
                arrived.set()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/in"
    b = ["--broker", daemon]
    try:
        assert mp("topics", "create", "prices", *b).returncode == 0
        r = mp("subscriptions", "create", "prices", "--url", url, "--raw", "--attempts", "3", "--min-delay-s",
               "0.05", "--concurrency", "2", "--rate", "10", *b)
        assert r.returncode == 0 and r.stdout.endswith(f"topic prices -> webhook {url}\n".encode()), r.stderr
        sub = r.stdout.split()[1].rstrip(b":").decode()
        assert mp("publish", "prices", "p-1", *b).returncode == 0
        assert arrived.wait(10.0)
        assert [body for _, body in got] == [b"p-1", b"p-1"]
        assert got[0][0]["x-millpond-message-id"] == got[1][0]["x-millpond-message-id"]
        assert [h["x-millpond-attempt"] for h, _ in got] == ["1", "2"]
        assert got[1][0]["x-millpond-subscription-id"] == sub
        for _ in range(50):
            d = json.loads(mp("subscriptions", "describe", sub, "--json", *b).stdout)
            if d["delivered"] == 1:
                break
            time.sleep(0.1)
        assert (d["delivered"], d["failed"], d["subscription"]["url"]) == (1, 0, url)
        text = mp("subscriptions", "describe", sub, *b).stdout.decode()
        assert text.startswith(f"subscription {sub}: topic prices -> webhook {url}\n"
                               "delivery: 3 attempt(s), retries 0.05-20 s apart within 3600 s, timeout 15 s, "
                               "2 in flight, 10/s\ndelivered 1")
        assert f"prices -> webhook {url} raw" in mp("subscriptions", "list", *b).stdout.decode()
    finally:
        server.shutdown()
        server.server_close()
    r = mp("subscriptions", "create", "prices", "--url", "http://10.0.0.1/in", *b)
    assert r.returncode == 1 and r.stderr.startswith(b"millpond subscriptions: INVALID_PARAMETER_VALUE")
    assert b"webhook_allow" in r.stderr and b"Traceback" not in r.stderr
    r = mp("subscriptions", "create", "prices", "--queue", "q", "--attempts", "2", *b)
    assert r.returncode == 2 and b"are for a --url subscription" in r.stderr
    r = mp("subscriptions", "create", "prices", "--queue", "q", "--url", url, *b)
    assert r.returncode == 2 and b"not allowed with argument" in r.stderr
