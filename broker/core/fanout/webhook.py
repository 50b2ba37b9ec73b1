# Webhook targets of subscriptions (issue 12 item 4; SNS's HTTP/S endpoints): the delivery policy (attempts, backoff
# with jitter, the time budget, the request timeout, SNS's healthyRetryPolicy and throttlePolicy), the allow-list
# that decides which hosts and addresses a webhook may reach, and each subscription's delivery state: the records
# taken from its partitions and not settled yet, the requests in flight (bounded) and the pacing of their starts.
# Pure: times (monotonic s) and the jitter draw are arguments; no clock, no sockets, no HTTP (http.py makes the
# call, in a worker thread); must not know about the log, the queues or protocols.
from __future__ import annotations

import ipaddress
import math
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Iterable

from millpond.broker.wire.errors import InvalidParameterValueError

WEBHOOK_TARGET = "webhook"
# SNS's default HTTP/S delivery policy (sqs_sns.md section 2.4): 3 retries 20 s apart, so 4 attempts
ATTEMPTS_MAX = 4
MIN_DELAY_S = 20.0
MAX_DELAY_S = 20.0
TOTAL_S = 3600.0  # SNS's hard cap on the total retry time of an HTTP/S delivery
TIMEOUT_S = 15.0  # SNS: the endpoint must answer within 15 s
JITTER = 0.2  # a retry's delay is its backoff delay less up to this fraction of it
CONCURRENCY_MAX = 4  # requests in flight per subscription
WINDOW = 256  # records one webhook subscription holds taken and not settled, over its partitions
WINDOW_BYTES = 4 * 1024 * 1024  # and their bytes (request bodies and record values)
LOOPBACK = ("127.0.0.0/8", "::1/128", "localhost")  # the broker's default allow-list


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How a webhook subscription delivers (SNS's HTTP/S DeliveryPolicy, in millpond's names and units).

    ``attempts_max`` requests per record in all, the first included (SNS numRetries + 1; 1..101; default 4, SNS's 3
    retries); the n-th retry waits ``min(max_delay_s, min_delay_s * 2**(n-1))`` seconds (SNS's exponential
    backoffFunction from minDelayTarget to maxDelayTarget; the defaults, 20 s and 20 s, are SNS's HTTP/S defaults),
    less up to ``jitter`` of it (SNS adds jitter too); no retry starts later than ``total_s`` seconds after the
    first attempt (SNS caps the retry time at 3,600 s); ``timeout_s`` per request (SNS: 15 s);
    ``concurrency_max`` requests in flight (1..64); ``rate_per_second`` requests started per second at most (SNS's
    throttlePolicy.maxReceivesPerSecond, >= 1; None: no limit). Raises ``InvalidParameterValueError`` naming the
    field out of range."""

    attempts_max: int = ATTEMPTS_MAX
    min_delay_s: float = MIN_DELAY_S
    max_delay_s: float = MAX_DELAY_S
    total_s: float = TOTAL_S
    timeout_s: float = TIMEOUT_S
    concurrency_max: int = CONCURRENCY_MAX
    rate_per_second: float | None = None
    jitter: float = JITTER

    def __post_init__(self) -> None:
        checks = (
            ("attempts_max", self.attempts_max, 1, 101, int),
            ("min_delay_s", self.min_delay_s, 0.0, 3600.0, (int, float)),
            ("max_delay_s", self.max_delay_s, self.min_delay_s, 3600.0, (int, float)),
            ("total_s", self.total_s, 0.0, TOTAL_S, (int, float)),
            ("timeout_s", self.timeout_s, 0.001, 900.0, (int, float)),
            ("concurrency_max", self.concurrency_max, 1, 64, int),
            ("jitter", self.jitter, 0.0, 1.0, (int, float)),
        )
        for name, value, low, high, kind in checks:
            if isinstance(value, bool) or not isinstance(value, kind) or not (low <= value <= high):
                raise InvalidParameterValueError(f"{name} must be in {low}..{high}, got {value!r}", parameter=name)
        rate = self.rate_per_second
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate >= 1
                                 or math.isinf(rate)):
            raise InvalidParameterValueError(f"rate_per_second must be >= 1 (SNS maxReceivesPerSecond) or None, "
                                             f"got {rate!r}", parameter="rate_per_second")

    def to_record(self) -> dict[str, Any]:
        return {"attempts_max": self.attempts_max, "min_delay_s": self.min_delay_s, "max_delay_s": self.max_delay_s,
                "total_s": self.total_s, "timeout_s": self.timeout_s, "concurrency_max": self.concurrency_max,
                "rate_per_second": self.rate_per_second, "jitter": self.jitter}


def backoff_s(policy: DeliveryPolicy, retry: int, draw: float) -> float:
    """Seconds before retry number ``retry`` (1: the second attempt): ``min(max_delay_s, min_delay_s *
    2**(retry-1))`` less ``jitter * draw`` of it, ``draw`` in [0, 1) (a uniform random number the caller draws).
    Raises ``ValueError`` for ``retry < 1`` or a draw outside [0, 1)."""
    if retry < 1 or not 0.0 <= draw < 1.0:
        raise ValueError(f"retry must be >= 1 and draw in [0, 1), got {retry}, {draw}")
    base = min(policy.max_delay_s, policy.min_delay_s * 2.0 ** min(retry - 1, 64))
    return base * (1.0 - policy.jitter * draw)


def retry_at(policy: DeliveryPolicy, attempts: int, first_at: float, now: float, draw: float) -> float | None:
    """When the next attempt of a record starts, given ``attempts`` made (the last failed at ``now``) and the
    first started at ``first_at`` (monotonic s); None when it gets no more: ``attempts_max`` reached, or the retry
    would start past ``first_at + total_s`` (then the record goes to the dead-letter queue, as SNS)."""
    if attempts >= policy.attempts_max:
        return None
    at = now + backoff_s(policy, attempts, draw)
    return None if at > first_at + policy.total_s else at


# -- the allow-list ------------------------------------------------------------------------------------------------
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class AllowList:
    """Which webhook hosts the broker may reach (``webhook_allow`` in the broker config): host names (exact,
    case-insensitive) and networks (CIDRs; an address is a /32 or /128). A host that is an address must lie in a
    listed network; a host name must be listed, and each address it resolves to at delivery must lie in a listed
    network or be a global (public) one, so a listed name re-pointed at a private, link-local or loopback address
    (DNS rebinding) is refused unless that network is listed."""

    names: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> "AllowList":
        """Raises ``ValueError`` naming an entry that is neither a host name nor a network."""
        names, networks = set(), []
        for entry in entries:
            if not isinstance(entry, str) or not entry.strip():
                raise ValueError(f"webhook_allow entries are host names or CIDRs, got {entry!r}")
            text = entry.strip()
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
                continue
            except ValueError:
                pass
            name = text.lower().rstrip(".")
            if "/" in name or ":" in name or not all(part and len(part) <= 63 and part.replace("-", "").isalnum()
                                                      for part in name.split(".")):
                raise ValueError(f"webhook_allow entry {entry!r} is neither a host name nor a CIDR")
            names.add(name)
        return cls(frozenset(names), tuple(networks))

    def in_networks(self, address: Address) -> bool:
        return any(address.version == n.version and address in n for n in self.networks)

    def host_allowed(self, host: str) -> bool:
        """At subscribe time: an address host in a listed network, or a listed host name."""
        try:
            return self.in_networks(ipaddress.ip_address(host))
        except ValueError:
            return host.lower().rstrip(".") in self.names

    def address_allowed(self, host: str, address: Address) -> bool:
        """At delivery: may ``host`` be reached at ``address`` (what it resolved to)?"""
        if self.in_networks(address):
            return True
        return host.lower().rstrip(".") in self.names and address.is_global


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    scheme: str
    host: str  # without brackets for an IPv6 address
    port: int


def check_url(url: Any, allow: AllowList) -> Endpoint:
    """A webhook URL checked at subscribe time: ``http`` or ``https``, a host, no user info, at most 2,048
    characters, its host allowed by ``allow``. Raises ``InvalidParameterValueError`` (``parameter`` "url")."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise InvalidParameterValueError(f"url must be an http or https URL of at most 2,048 characters, got "
                                         f"{str(url)[:100]!r}", parameter="url")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidParameterValueError(f"url {url[:250]!r} is not a URL: {exc}", parameter="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidParameterValueError(f"url {url[:250]!r}: the scheme must be http or https, with a host",
                                         parameter="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidParameterValueError(f"url {url[:250]!r}: user info is not allowed in a webhook URL",
                                         parameter="url")
    host = parts.hostname
    if not allow.host_allowed(host):
        raise InvalidParameterValueError(
            f"url {url[:250]!r}: host {host[:250]!r} is not in the broker's webhook_allow list (loopback by default; "
            "an operator may add host names and CIDRs to it in the broker config)", parameter="url")
    return Endpoint(url, parts.scheme, host, port if port is not None else (443 if parts.scheme == "https" else 80))


# -- a subscription's delivery state ------------------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class Delivery:
    """One record on its way to a webhook: ``attempts`` started, the first at ``first_at``; ``due``: when the next
    may start (monotonic s); ``in_flight``: a request is out; ``dead``: out of attempts, waiting for room in the
    dead-letter queue."""

    partition: int
    offset: int
    message_id: str
    body: bytes
    record: Any  # the log record (its envelope goes to the dead-letter queue)
    attempts: int = 0
    first_at: float = -math.inf
    due: float = -math.inf
    in_flight: bool = False
    dead: bool = False
    last_error: str = ""


@dataclass(slots=True)
class WebhookState:
    """A webhook subscription's records taken and not settled, per partition in offset order; ``taken``:
    partition -> the next offset to look at (the cursor is the first unsettled offset, or ``taken``);
    ``in_flight`` requests; ``next_start``: the earliest time the next request may start (``rate_per_second``).
    At most ``window`` records and ``window_bytes`` bytes are held (one record at least, however large)."""

    policy: DeliveryPolicy
    window: int = WINDOW
    window_bytes: int = WINDOW_BYTES
    held_bytes: int = 0
    pending: dict[int, dict[int, Delivery]] = field(default_factory=dict)
    taken: dict[int, int] = field(default_factory=dict)
    held: int = 0
    in_flight: int = 0
    next_start: float = -math.inf

    def look_from(self, partition: int, cursor: int) -> int:
        """The next offset of ``partition`` to look at, its cursor being ``cursor``."""
        return max(self.taken.get(partition, cursor), cursor)

    def has_room(self) -> bool:
        return self.held < self.window and self.held_bytes < self.window_bytes

    def take(self, d: Delivery) -> None:
        self.pending.setdefault(d.partition, {})[d.offset] = d
        self.held += 1
        self.held_bytes += _size(d)

    def passed(self, partition: int, offset: int) -> None:
        """Every offset of ``partition`` below ``offset`` has been looked at (taken, filtered out or skipped)."""
        self.taken[partition] = max(self.taken.get(partition, 0), offset)

    def settle(self, d: Delivery) -> None:
        """``d`` delivered, dead-lettered or dropped: it no longer holds its partition's cursor."""
        mine = self.pending.get(d.partition)
        if mine is not None and mine.pop(d.offset, None) is d:
            self.held -= 1
            self.held_bytes -= _size(d)
            if not mine:
                del self.pending[d.partition]

    def cursor(self, partition: int, cursor: int) -> int:
        """The partition's cursor: its first unsettled offset, else the next offset to look at."""
        mine = self.pending.get(partition)
        return next(iter(mine)) if mine else self.look_from(partition, cursor)

    def startable(self, now: float, room: int) -> list[Delivery]:
        """The deliveries whose next attempt starts at ``now``, at most ``room`` (the broker's requests left), the
        subscription's ``concurrency_max`` and ``rate_per_second`` respected (oldest first in each partition); marks
        them in flight and counts their attempts."""
        out: list[Delivery] = []
        rate = self.policy.rate_per_second
        for mine in self.pending.values():
            for d in mine.values():
                if len(out) >= room or self.in_flight >= self.policy.concurrency_max or self.next_start > now:
                    return out
                if d.in_flight or d.dead or d.due > now:
                    continue
                d.in_flight = True
                if d.attempts == 0:
                    d.first_at = now
                d.attempts += 1
                self.in_flight += 1
                if rate is not None:
                    self.next_start = max(now, self.next_start) + 1.0 / rate
                out.append(d)
        return out

    def finished(self, d: Delivery, ok: bool, permanent: bool, now: float, draw: float) -> str:
        """A request of ``d`` ended at ``now``: ``"delivered"`` (a 2xx answer), ``"retry"`` (``d.due`` set to the
        next attempt's time) or ``"dead"`` (out of attempts or time, or a ``permanent`` failure: the caller
        dead-letters it)."""
        d.in_flight = False
        self.in_flight -= 1
        if ok:
            return "delivered"
        at = None if permanent else retry_at(self.policy, d.attempts, d.first_at, now, draw)
        if at is None:
            d.dead = True
            return "dead"
        d.due = at
        return "retry"

    def next_due(self) -> float:
        """When a request could next start (``inf``: none waits, or every slot is taken until a request ends)."""
        if self.in_flight >= self.policy.concurrency_max:
            return math.inf
        due = min((d.due for mine in self.pending.values() for d in mine.values() if not d.in_flight and not d.dead),
                  default=math.inf)
        return max(due, self.next_start) if due < math.inf else math.inf


def _size(d: Delivery) -> int:
    value = getattr(d.record, "value", None)
    return len(d.body) + (len(value) if value else 0)


def request_headers(topic: str, subscription: str, message_id: str, partition: int, offset: int, attempt: int,
                    raw: bool, user_agent: str) -> dict[str, str]:
    """The headers of a webhook POST, shaped as SNS's ``x-amz-sns-*`` in millpond's names: the message type, the
    message id (the record's: the same on every attempt and in every subscription's copy, as
    ``x-amz-sns-message-id``), the topic, the subscription, the record's partition and offset, the attempt number
    (from 1) and, with raw delivery, ``x-millpond-raw-delivery: true`` (SNS's ``x-amz-sns-rawdelivery``). The
    envelope is ``text/plain; charset=UTF-8`` as SNS sends it; a raw value is ``application/octet-stream``."""
    headers = {"Content-Type": "application/octet-stream" if raw else "text/plain; charset=UTF-8",
               "User-Agent": user_agent, "x-millpond-message-type": "Notification",
               "x-millpond-message-id": message_id, "x-millpond-topic": topic,
               "x-millpond-subscription-id": subscription, "x-millpond-partition": str(partition),
               "x-millpond-offset": str(offset), "x-millpond-attempt": str(attempt)}
    if raw:
        headers["x-millpond-raw-delivery"] = "true"
    return headers


__all__ = [
    "ATTEMPTS_MAX", "AllowList", "CONCURRENCY_MAX", "Delivery", "DeliveryPolicy", "Endpoint", "JITTER", "LOOPBACK",
    "MAX_DELAY_S", "MIN_DELAY_S", "TIMEOUT_S", "TOTAL_S", "WEBHOOK_TARGET", "WINDOW", "WINDOW_BYTES", "WebhookState",
    "backoff_s", "check_url", "request_headers", "retry_at",
]
