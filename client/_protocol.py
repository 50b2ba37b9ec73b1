# Sans-IO protocol core shared by the async and blocking clients: correlation ids, request encoding, bytes in ->
# decoded responses out, the handshake and the broker limits it reveals, and turning answers into values or typed
# exceptions. Knows nothing of sockets, threads or event loops (h11 style: feed bytes, take events).
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from millpond.broker.wire.errors import (
    ConnectionClosedError,
    FrameTooLargeError,
    InvalidConfigError,
    InvalidRequestError,
    MillpondError,
    from_wire,
)
from millpond.broker.wire.frames import FRAME_BYTES_MAX_DEFAULT, FRAME_HEADER, PROTOCOL_VERSION, FrameDecoder, decode_response, encode_request, encode_request_parts

from millpond.client.types import BrokerLimits, PartitionDescription, TopicDescription

OFFSET_SPECS = ("earliest", "latest")


@dataclass(frozen=True, slots=True)
class Response:
    """One decoded answer: ``code`` 0 means ``body`` is the API's answer map, else an error body."""

    correlation_id: int
    code: int
    body: Any

    def result(self) -> Any:
        """The answer body, or raise the exception class matching ``code`` (with ``.details``)."""
        if self.code == 0:
            return self.body
        raise from_wire(self.code, self.body)


class ClientProtocol:
    """State of one connection's protocol: ids handed out, handshake done, limits learned.

    Use: ``cid, data = p.hello()``; write ``data``; ``for r in p.receive(bytes_read): ...``; after the hello answer
    call ``p.handshake_done(r)``. ``request()`` before the handshake raises (the broker would answer
    HANDSHAKE_REQUIRED); any id outstanding is tracked so stray answers are dropped, not misdelivered.
    """

    def __init__(self, client_id: str, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT) -> None:
        self.client_id = client_id
        self._next_id = 1  # 0 is what the broker uses for requests it could not parse
        self._decoder = FrameDecoder(frame_bytes_max)
        self._outstanding: dict[int, str] = {}
        self._hello_id: int | None = None
        self.limits: BrokerLimits | None = None
        self.broker_version: str | None = None

    @property
    def ready(self) -> bool:
        return self.limits is not None

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    def hello(self) -> tuple[int, bytes]:
        if self._hello_id is not None:
            raise RuntimeError("hello already sent on this connection")
        # frame_bytes_max: the largest answer this client accepts; the broker fits fetch answers to it
        cid, data = self._encode("hello", {"protocol_version": PROTOCOL_VERSION, "client_id": self.client_id,
                                           "frame_bytes_max": self._decoder.frame_bytes_max})
        self._hello_id = cid
        return cid, data

    def handshake_done(self, response: Response) -> BrokerLimits:
        """Apply the hello answer; raises its error (e.g. UnsupportedVersionError) if it was refused."""
        body = response.result()
        lim = body["limits"]
        self.limits = BrokerLimits(
            frame_bytes_max=int(lim["frame_bytes_max"]),
            batch_bytes_max=int(lim["batch_bytes_max"]),
            requests_in_flight_max=int(lim["requests_in_flight_max"]),
            partitions_max=int(lim["partitions_max"]),
            **({"queue_batch_entries_max": int(lim["queue_batch_entries_max"])}
               if "queue_batch_entries_max" in lim else {}),  # an older broker: BrokerLimits' default, SQS's
        )
        self.broker_version = body.get("broker_version")
        return self.limits

    def request(self, api: str, body: dict[str, Any]) -> tuple[int, bytes]:
        """Encode one request; returns ``(correlation_id, frame bytes)``. Raises ``FrameTooLargeError`` for a
        request larger than the broker's ``frame_bytes_max`` (nothing is sent: the broker would close the
        connection, failing every other request on it)."""
        if self.limits is None:
            raise RuntimeError("handshake not completed: send hello() first")
        cid, data = self._encode(api, body)
        self._check_size(cid, api, len(data))
        return cid, data

    def request_parts(self, api: str, body: dict[str, Any]) -> tuple[int, list[bytes | bytearray]]:
        """``request`` as pieces to write in order: a large batch is its own piece, never copied into the frame."""
        if self.limits is None:
            raise RuntimeError("handshake not completed: send hello() first")
        cid = self._next_cid(api)
        parts = encode_request_parts(cid, api, body)
        self._check_size(cid, api, sum(len(p) for p in parts))
        return cid, parts

    def _check_size(self, cid: int, api: str, frame_bytes: int) -> None:
        limit = self.limits.frame_bytes_max  # type: ignore[union-attr]
        if frame_bytes - FRAME_HEADER.size > limit:
            self._outstanding.pop(cid, None)
            raise FrameTooLargeError(f"{api}: a request of {frame_bytes - FRAME_HEADER.size} bytes exceeds the "
                                     f"broker's frame_bytes_max={limit}; nothing was sent", frame_bytes_max=limit)

    def _encode(self, api: str, body: dict[str, Any]) -> tuple[int, bytes]:
        cid = self._next_cid(api)
        return cid, encode_request(cid, api, body)

    def _next_cid(self, api: str) -> int:
        cid = self._next_id
        self._next_id = cid + 1 if cid < 0x7FFFFFFF else 1
        self._outstanding[cid] = api
        return cid

    def forget(self, correlation_id: int) -> None:
        """The caller gave up on a request (cancelled or timed out): its late answer will be dropped."""
        self._outstanding.pop(correlation_id, None)

    def receive(self, data: bytes) -> list[Response]:
        """Feed bytes read from the socket; return the answers now complete, for ids still outstanding.

        An answer with correlation id 0 (the broker could not parse one of our requests) is returned too: the
        caller cannot know which request it was, so it is a protocol bug worth surfacing. Raises
        ``FrameTooLargeError`` / ``InvalidRequestError`` if the byte stream itself is broken.
        """
        out = []
        for frame in self._decoder.feed(data):
            cid, code, body = decode_response(frame)
            if not isinstance(cid, int) or not isinstance(code, int):
                raise InvalidRequestError("response envelope has non-integer correlation id or code")
            if cid == 0 or self._outstanding.pop(cid, None) is not None:
                out.append(Response(cid, code, body))
        return out

    def fail_all(self, reason: str) -> list[tuple[int, MillpondError]]:
        """The connection died: every outstanding id gets a retriable ConnectionClosedError."""
        ids = list(self._outstanding)
        self._outstanding.clear()
        return [(cid, ConnectionClosedError(reason)) for cid in ids]


# --- request bodies and answer parsing (units: Python seconds -> wire milliseconds) ---


SECONDS_MAX = float(2**63 // 1000 - 1)  # in milliseconds, a 64-bit integer


def _seconds_to_ms(value: float | None, name: str, *, forever: bool = False) -> int | None:
    """Seconds as wire milliseconds; with ``forever``, -1 stays -1 (keep forever, as Kafka's retention.ms). Any
    other negative raises ``InvalidConfigError`` naming ``name`` (it used to mean "forever" silently), and so does
    a value that is not a number of seconds (a string, a bool, NaN): in the caller's unit and name, not the wire's."""
    if value is None:
        return None
    if value.__class__ not in (int, float) or value != value:
        raise InvalidConfigError(f"{name} must be a number of seconds, got {value!r}", key=name)
    if forever and value == -1:
        return -1
    if value < 0:
        also = ", or -1 to keep forever" if forever else ""
        raise InvalidConfigError(f"{name} must be >= 0 seconds{also}, got {value!r}", key=name)
    if value == math.inf:
        raise InvalidConfigError(f"{name} must be a finite number of seconds, got inf", key=name)
    if value > SECONDS_MAX:  # the wire's milliseconds are a 64-bit integer
        raise InvalidConfigError(f"{name} must be at most {SECONDS_MAX:.0f} seconds, got {value!r}", key=name)
    return int(round(value * 1000))


def create_topic_body(
    name: str,
    partitions: int,
    retention_s: float | None,
    retention_bytes: int | None,
    segment_bytes: int | None,
    segment_s: float | None,
) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key, value in (
        ("retention_ms", _seconds_to_ms(retention_s, "retention_s", forever=True)),
        ("retention_bytes", retention_bytes),
        ("segment_bytes", segment_bytes),
        ("segment_ms", _seconds_to_ms(segment_s, "segment_s")),
    ):
        if value is not None:
            config[key] = int(value)
    body: dict[str, Any] = {"name": name, "partitions": int(partitions)}
    if config:
        body["config"] = config
    return body


def topic_config_from_wire(config: dict[str, Any] | None) -> dict[str, Any]:
    """A topic's wire config for the Python API: ``x_ms`` milliseconds become ``x_s`` seconds (float; -1 stays -1,
    no limit), byte sizes stay as they are."""
    out: dict[str, Any] = {}
    for key, value in (config or {}).items():
        if key.endswith("_ms"):
            out[key[:-3] + "_s"] = -1 if value == -1 else int(value) / 1000
        else:
            out[key] = value
    return out


def parse_topic_description(body: dict[str, Any]) -> TopicDescription:
    parts = tuple(
        PartitionDescription(
            partition=int(p["partition"]),
            log_start_offset=int(p["log_start_offset"]),
            log_end_offset=int(p["log_end_offset"]),
            high_watermark=int(p["high_watermark"]),
            size_bytes=int(p["size_bytes"]),
            segments=int(p.get("segments", 0)),
        )
        for p in sorted(body["partitions"], key=lambda p: p["partition"])
    )
    return TopicDescription(name=body["name"], config=topic_config_from_wire(body.get("config")),
                            partitions=parts)


def offset_spec(spec: str | int) -> str | int:
    """Validate a list_offsets spec: ``"earliest"``, ``"latest"`` or a timestamp in epoch ms (int >= 0)."""
    if isinstance(spec, str):
        if spec not in OFFSET_SPECS:
            raise ValueError(f"spec must be 'earliest', 'latest' or a timestamp in ms, got {spec!r}")
        return spec
    if isinstance(spec, bool) or not isinstance(spec, int) or spec < 0:
        raise ValueError(f"spec must be 'earliest', 'latest' or a timestamp in ms (int >= 0), got {spec!r}")
    return spec


def parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """``"host:port"`` or ``(host, port)`` -> ``(host, port)``; raises ValueError naming the bad input."""
    if isinstance(address, tuple):
        host, port = address
    else:
        host, sep, port_s = str(address).rpartition(":")
        if not sep or not host:
            raise ValueError(f"broker address must be HOST:PORT, got {address!r}")
        host = host.strip("[]")
        try:
            port = int(port_s)
        except ValueError:
            raise ValueError(f"broker address must be HOST:PORT, got {address!r}") from None
    if not (0 < int(port) < 65536):
        raise ValueError(f"broker port must be 1-65535, got {port!r}")
    return str(host), int(port)
