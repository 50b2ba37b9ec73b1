# The webhook delivery core with literal times: SNS's default policy, the backoff schedule and its jitter bounds,
# attempts and the time budget, the allow-list (subscribe-time host check, delivery-time address check against DNS
# rebinding), URL checks, and a subscription's delivery state: the concurrency bound, the rate, the cursor over
# settled records only, dead after the last attempt.
from __future__ import annotations

import ipaddress
import math

import pytest

from millpond.broker.core.fanout.webhook import (
    LOOPBACK,
    AllowList,
    Delivery,
    DeliveryPolicy,
    WebhookState,
    backoff_s,
    check_url,
    request_headers,
    retry_at,
)
from millpond.broker.wire.errors import InvalidParameterValueError


def test_the_default_policy_is_sns_http_default_three_retries_twenty_seconds_apart_fifteen_second_timeout():
    p = DeliveryPolicy()
    assert (p.attempts_max, p.min_delay_s, p.max_delay_s, p.total_s, p.timeout_s) == (4, 20.0, 20.0, 3600.0, 15.0)
    assert (p.concurrency_max, p.rate_per_second, p.jitter) == (4, None, 0.2)
    assert [backoff_s(p, n, 0.0) for n in (1, 2, 3)] == [20.0, 20.0, 20.0]


def test_backoff_doubles_from_the_min_delay_up_to_the_max_delay():
    p = DeliveryPolicy(attempts_max=8, min_delay_s=1.0, max_delay_s=10.0, jitter=0.0)
    assert [backoff_s(p, n, 0.5) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_jitter_takes_off_at_most_its_fraction_of_the_delay():
    p = DeliveryPolicy(min_delay_s=10.0, max_delay_s=10.0, jitter=0.2)
    assert backoff_s(p, 1, 0.0) == 10.0
    assert backoff_s(p, 1, 0.5) == pytest.approx(9.0)
    assert backoff_s(p, 1, 0.999999) == pytest.approx(8.000002)
    draws = [i / 1000 for i in range(1000)]
    delays = [backoff_s(p, 2, d) for d in draws]
    assert min(delays) > 8.0 and max(delays) == 10.0
    with pytest.raises(ValueError):
        backoff_s(p, 1, 1.0)
    with pytest.raises(ValueError):
        backoff_s(p, 0, 0.0)


def test_retry_at_stops_after_the_last_attempt():
    p = DeliveryPolicy(attempts_max=3, min_delay_s=1.0, max_delay_s=4.0, jitter=0.0)
    assert retry_at(p, 1, 100.0, 100.5, 0.0) == 101.5  # after attempt 1: 1 s
    assert retry_at(p, 2, 100.0, 102.0, 0.0) == 104.0  # after attempt 2: 2 s
    assert retry_at(p, 3, 100.0, 105.0, 0.0) is None  # attempt 3 was the last


def test_retry_at_stops_when_the_next_attempt_would_start_past_the_time_budget():
    p = DeliveryPolicy(attempts_max=10, min_delay_s=5.0, max_delay_s=5.0, total_s=12.0, jitter=0.0)
    assert retry_at(p, 1, 0.0, 1.0, 0.0) == 6.0
    assert retry_at(p, 2, 0.0, 7.0, 0.0) == 12.0  # exactly at the budget's end: still tried
    assert retry_at(p, 3, 0.0, 7.5, 0.0) is None  # 12.5 > 0 + 12


@pytest.mark.parametrize("field, value", [
    ("attempts_max", 0), ("attempts_max", 102), ("attempts_max", 2.0), ("min_delay_s", -1.0),
    ("total_s", 3601.0), ("timeout_s", 0.0), ("concurrency_max", 0), ("concurrency_max", 65),
    ("rate_per_second", 0.5), ("rate_per_second", math.inf), ("jitter", 1.5), ("attempts_max", True),
])
def test_a_policy_field_out_of_range_is_refused_naming_it(field, value):
    with pytest.raises(InvalidParameterValueError) as err:
        DeliveryPolicy(**{field: value})
    assert err.value.details["parameter"] == field
    assert field in err.value.message


def test_the_max_delay_may_not_be_below_the_min_delay():
    with pytest.raises(InvalidParameterValueError) as err:
        DeliveryPolicy(min_delay_s=10.0, max_delay_s=5.0)
    assert err.value.details["parameter"] == "max_delay_s"


# -- the allow-list ------------------------------------------------------------------------------------------------
def test_the_default_allow_list_is_loopback_only():
    allow = AllowList.parse(LOOPBACK)
    assert allow.host_allowed("127.0.0.1") and allow.host_allowed("127.9.8.7") and allow.host_allowed("::1")
    assert allow.host_allowed("localhost") and allow.host_allowed("LOCALHOST.")
    for host in ("10.0.0.1", "169.254.169.254", "192.168.1.1", "8.8.8.8", "example.com", "::ffff:10.0.0.1"):
        assert not allow.host_allowed(host), host


def test_listed_names_and_networks_are_allowed():
    allow = AllowList.parse(["hooks.example.com", "10.1.0.0/16", "2001:db8::/32"])
    assert allow.host_allowed("hooks.example.com") and allow.host_allowed("10.1.200.3")
    assert allow.host_allowed("2001:db8::5")
    assert not allow.host_allowed("other.example.com") and not allow.host_allowed("10.2.0.1")
    assert not allow.host_allowed("127.0.0.1")  # an operator's list replaces the default


def test_a_listed_name_resolving_to_an_internal_address_is_refused_at_delivery():
    allow = AllowList.parse(["hooks.example.com", "10.1.0.0/16"])
    ip = ipaddress.ip_address
    assert allow.address_allowed("hooks.example.com", ip("93.184.216.34"))  # public
    assert allow.address_allowed("hooks.example.com", ip("10.1.0.9"))  # a listed network
    for internal in ("10.0.0.1", "127.0.0.1", "169.254.169.254", "192.168.0.1", "::1", "fd00::1"):
        assert not allow.address_allowed("hooks.example.com", ip(internal)), internal
    assert not allow.address_allowed("unlisted.example.com", ip("93.184.216.34"))
    loopback = AllowList.parse(LOOPBACK)
    assert loopback.address_allowed("localhost", ip("127.0.0.1"))
    assert not loopback.address_allowed("localhost", ip("10.0.0.1"))


@pytest.mark.parametrize("entry", ["", "exa mple.com", "http://x", "a..b", "10.0.0.0/40"])
def test_an_allow_list_entry_that_is_neither_name_nor_network_is_refused(entry):
    with pytest.raises(ValueError):
        AllowList.parse([entry])


def test_check_url_takes_allowed_http_urls_and_names_what_is_wrong_with_others():
    allow = AllowList.parse(LOOPBACK)
    e = check_url("http://127.0.0.1:8080/hook?x=1", allow)
    assert (e.scheme, e.host, e.port) == ("http", "127.0.0.1", 8080)
    assert check_url("https://localhost/h", allow).port == 443
    assert check_url("http://[::1]/h", allow).host == "::1"
    cases = {
        "http://10.0.0.1/h": "not in the broker's webhook_allow list",
        "http://169.254.169.254/latest": "not in the broker's webhook_allow list",
        "ftp://127.0.0.1/h": "the scheme must be http or https",
        "http://user:pw@127.0.0.1/h": "user info",
        "http://127.0.0.1:99999/h": "is not a URL",
        "127.0.0.1/h": "the scheme must be http or https",
        "http://" + "a" * 3000: "at most 2,048 characters",
    }
    for url, words in cases.items():
        with pytest.raises(InvalidParameterValueError) as err:
            check_url(url, allow)
        assert words in err.value.message, (url, err.value.message)
        assert err.value.details["parameter"] == "url"


# -- a subscription's delivery state -------------------------------------------------------------------------------
def _state(**policy) -> WebhookState:
    return WebhookState(DeliveryPolicy(**policy))


def _take(w: WebhookState, p: int, *offsets: int) -> list[Delivery]:
    out = []
    for o in offsets:
        d = Delivery(p, o, f"m{p}-{o}", b"body", None)
        w.take(d)
        w.passed(p, o + 1)
        out.append(d)
    return out


def test_at_most_concurrency_max_requests_start_and_a_finished_one_frees_a_slot():
    w = _state(concurrency_max=4)
    ds = _take(w, 0, *range(10))
    started = w.startable(100.0, room=16)
    assert [d.offset for d in started] == [0, 1, 2, 3]
    assert w.in_flight == 4 and w.startable(100.0, room=16) == []
    assert w.next_due() == math.inf  # nothing may start until a request ends
    assert w.finished(ds[1], True, False, 100.2, 0.0) == "delivered"
    w.settle(ds[1])
    assert [d.offset for d in w.startable(100.2, room=16)] == [4]


def test_the_broker_wide_room_bounds_the_starts_too():
    w = _state(concurrency_max=4)
    _take(w, 0, *range(10))
    assert len(w.startable(0.0, room=2)) == 2


def test_a_rate_spaces_the_starts():
    w = _state(concurrency_max=8, rate_per_second=4.0)
    _take(w, 0, *range(5))
    assert [d.offset for d in w.startable(10.0, room=16)] == [0]
    assert w.startable(10.2, room=16) == []
    assert w.next_due() == 10.25
    assert [d.offset for d in w.startable(10.25, room=16)] == [1]
    assert [d.offset for d in w.startable(10.5, room=16)] == [2]
    assert w.next_start == 10.75


def test_the_cursor_moves_only_over_settled_records():
    w = _state(concurrency_max=4)
    d0, d1, d2 = _take(w, 0, 5, 6, 7)
    assert w.cursor(0, 5) == 5
    w.startable(0.0, room=16)
    for d in (d1, d2):  # the later ones answer first
        w.finished(d, True, False, 0.1, 0.0)
        w.settle(d)
    assert w.cursor(0, 5) == 5  # record 5 still unsettled holds the cursor
    w.finished(d0, True, False, 0.2, 0.0)
    w.settle(d0)
    assert w.cursor(0, 5) == 8 and w.held == 0
    assert w.cursor(1, 3) == 3  # a partition with nothing taken: its own cursor


def test_a_failed_request_is_retried_after_its_backoff_then_dead_after_the_last_attempt():
    w = _state(attempts_max=3, min_delay_s=1.0, max_delay_s=4.0, jitter=0.5)
    (d,) = _take(w, 0, 0)
    assert w.startable(50.0, room=1) == [d] and d.attempts == 1 and d.first_at == 50.0
    assert w.finished(d, False, False, 50.5, 0.0) == "retry" and d.due == 51.5
    assert w.startable(51.4, room=1) == [] and w.next_due() == 51.5
    assert w.startable(51.5, room=1) == [d] and d.attempts == 2
    assert w.finished(d, False, False, 52.0, 0.5) == "retry" and d.due == 53.5  # 2 s less a quarter
    assert w.startable(53.5, room=1) == [d] and d.attempts == 3
    assert w.finished(d, False, False, 54.0, 0.0) == "dead" and d.dead
    assert w.startable(100.0, room=1) == [] and w.next_due() == math.inf
    assert w.cursor(0, 0) == 0  # dead but not settled until dead-lettered


def test_a_permanent_failure_is_dead_at_once():
    w = _state(attempts_max=5)
    (d,) = _take(w, 0, 0)
    w.startable(0.0, room=1)
    assert w.finished(d, False, True, 0.1, 0.0) == "dead" and d.attempts == 1


def test_the_window_bounds_the_records_held():
    w = WebhookState(DeliveryPolicy(), window=3)
    _take(w, 0, 0, 1)
    _take(w, 1, 0)
    assert not w.has_room() and w.held == 3


def test_the_window_bounds_the_bytes_held_too():
    w = WebhookState(DeliveryPolicy(), window_bytes=10)
    d = Delivery(0, 0, "m", b"123456", None)
    w.take(d)
    assert w.has_room() and w.held_bytes == 6
    w.take(Delivery(0, 1, "m", b"12345", None))
    assert not w.has_room() and w.held_bytes == 11
    w.settle(d)
    assert w.has_room() and w.held_bytes == 5


def test_request_headers_name_the_topic_subscription_and_message_id():
    h = request_headers("orders", "sub-1", "mid-9", 2, 41, 3, False, "millpond/0.1.0")
    assert h == {"Content-Type": "text/plain; charset=UTF-8", "User-Agent": "millpond/0.1.0",
                 "x-millpond-message-type": "Notification", "x-millpond-message-id": "mid-9",
                 "x-millpond-topic": "orders", "x-millpond-subscription-id": "sub-1", "x-millpond-partition": "2",
                 "x-millpond-offset": "41", "x-millpond-attempt": "3"}
    raw = request_headers("orders", "sub-1", "mid-9", 2, 41, 1, True, "millpond/0.1.0")
    assert raw["x-millpond-raw-delivery"] == "true" and raw["Content-Type"] == "application/octet-stream"
