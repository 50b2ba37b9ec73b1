# http.py, the webhook POST itself, against a small HTTP server on Trio in the test (the POST runs in a worker
# thread, as the server runs jobs): answers, a timeout, a refused connection, the resolved address checked against
# the allow-list at delivery (a listed name re-pointed at an address that is not allowed), IPv6 loopback, no
# redirects followed.
from __future__ import annotations

import socket

import trio

from millpond.broker.core.fanout.http import HttpPoster, HttpResult
from millpond.broker.core.fanout.webhook import LOOPBACK, AllowList
from tests.webhookkit import Hook

HEADERS = {"x-millpond-message-id": "m-1", "Content-Type": "text/plain; charset=UTF-8"}


async def _post(poster: HttpPoster, url: str, timeout_s: float = 5.0) -> HttpResult:
    return await trio.to_thread.run_sync(poster.post, url, b"body", HEADERS, timeout_s)


async def test_answers_are_results_and_only_2xx_is_ok(nursery):
    hook = Hook([204, 500, 302])
    url = await hook.start(nursery)
    poster = HttpPoster(AllowList.parse(LOOPBACK))
    results = [await _post(poster, url) for _ in range(3)]
    poster.close()
    assert [(r.status, r.ok, r.error) for r in results] == [(204, True, ""), (500, False, "HTTP 500"),
                                                            (302, False, "HTTP 302")]  # a redirect is not followed
    assert len(hook.got) == 3 and hook.got[0][1] == b"body"
    assert hook.got[0][0]["x-millpond-message-id"] == "m-1"


async def test_no_answer_within_the_timeout_is_a_failure_to_retry(nursery):
    hook = Hook([200], delay_s=5.0)
    url = await hook.start(nursery)
    poster = HttpPoster(AllowList.parse(LOOPBACK))
    result = await _post(poster, url, timeout_s=0.2)
    poster.close()
    assert (result.status, result.ok, result.permanent) == (None, False, False)
    assert result.error == "no answer within 0.2 s"


async def test_a_refused_connection_is_a_failure_to_retry():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    poster = HttpPoster(AllowList.parse(LOOPBACK))
    result = await _post(poster, f"http://127.0.0.1:{port}/h")
    poster.close()
    assert (result.status, result.permanent) == (None, False) and "ConnectError" in result.error


async def test_a_listed_name_resolving_to_an_address_not_allowed_is_refused_for_good(nursery):
    hook = Hook([200])
    url = await hook.start(nursery)
    # "localhost" listed by name only: it resolves to loopback, neither a listed network nor a public address
    poster = HttpPoster(AllowList.parse(["localhost"]))
    result = await _post(poster, url.replace("127.0.0.1", "localhost"))
    poster.close()
    assert (result.status, result.permanent) == (None, True)
    assert "resolves to 127.0.0.1, which webhook_allow does not allow" in result.error
    assert hook.got == []  # never connected


async def test_the_host_header_names_the_url_host_while_the_checked_address_is_dialled(nursery):
    hook = Hook([200])
    url = await hook.start(nursery)
    poster = HttpPoster(AllowList.parse(LOOPBACK))
    result = await _post(poster, url.replace("127.0.0.1", "localhost"))
    poster.close()
    assert result.ok
    assert hook.got[0][0]["host"] == f"localhost:{hook.port}"


async def test_ipv6_loopback(nursery):
    hook = Hook([200])
    url = await hook.start(nursery, host="::1")
    poster = HttpPoster(AllowList.parse(LOOPBACK))
    result = await _post(poster, url)
    poster.close()
    assert result.ok and hook.got[0][0]["host"] == f"[::1]:{hook.port}"


def _resolving_to(*addresses: str):
    def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]
    return getaddrinfo


async def test_a_listed_name_rebound_to_an_internal_address_is_refused(monkeypatch):
    import millpond.broker.core.fanout.http as http

    monkeypatch.setattr(http.socket, "getaddrinfo", _resolving_to("93.184.216.34", "10.0.0.1"))
    poster = HttpPoster(AllowList.parse(["hooks.example.com"]))
    result = await _post(poster, "http://hooks.example.com/in")
    poster.close()
    assert (result.status, result.permanent) == (None, True)
    assert result.error == ("webhook host 'hooks.example.com' resolves to 10.0.0.1, which webhook_allow does not "
                            "allow")


async def test_an_address_that_cannot_be_reached_gives_way_to_the_next(nursery, monkeypatch):
    import millpond.broker.core.fanout.http as http

    hook = Hook([200])
    await hook.start(nursery)
    monkeypatch.setattr(http.socket, "getaddrinfo", _resolving_to("::1", "127.0.0.1"))  # nothing on ::1's port
    poster = HttpPoster(AllowList.parse(LOOPBACK))
    result = await _post(poster, f"http://localhost:{hook.port}/h")
    poster.close()
    assert result.ok and len(hook.got) == 1
