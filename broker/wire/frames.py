# Framing and message envelopes: 4-byte big-endian length prefix, then one msgpack value.
# Owns the byte layout of requests and responses and the incremental decoder; knows nothing of sockets or APIs.
from __future__ import annotations

import struct
from typing import Any, Iterator

import msgpack

from millpond.broker.wire.errors import FrameTooLargeError, InvalidRequestError

PROTOCOL_VERSION = 1
FRAME_HEADER = struct.Struct(">I")
FRAME_BYTES_MAX_DEFAULT = 16 * 1024 * 1024

_packb = msgpack.packb
_unpackb = msgpack.unpackb
_pack_len = FRAME_HEADER.pack
_unpack_len = FRAME_HEADER.unpack_from


def encode_frame(message: Any) -> bytes:
    """One frame: length prefix + msgpack of ``message`` (bytes values stay bin, str stays str)."""
    body = _packb(message, use_bin_type=True)
    return _pack_len(len(body)) + body


def encode_request(correlation_id: int, api: str, body: dict[str, Any]) -> bytes:
    """A request frame: ``[correlation_id, api, body]``."""
    return encode_frame([correlation_id, api, body])


PIECE_BYTES_MIN = 65536  # a bytes-like value this large is sent as its own piece: copying it costs more


def encode_request_parts(correlation_id: int, api: str, body: dict[str, Any]) -> list[bytes | bytearray]:
    """``encode_request`` as pieces to send in order: a bytes-like value of ``body`` of at least
    ``PIECE_BYTES_MIN`` bytes (a produce's batch) is left out of the msgpack buffer and sent as its own piece after
    its bin header, so it is never copied by the encoder. Decodes as ``encode_request`` would."""
    for value in body.values():
        if value.__class__ in _BUFFERS and len(value) >= PIECE_BYTES_MIN:
            break
    else:
        return [encode_request(correlation_id, api, body)]
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    packer.pack_array_header(3)
    packer.pack(correlation_id)
    packer.pack(api)
    packer.pack_map_header(len(body))
    pieces: list[bytes | bytearray] = []
    total = 0
    for key, value in body.items():
        packer.pack(key)
        if value.__class__ in _BUFFERS and len(value) >= PIECE_BYTES_MIN:
            head = packer.bytes() + b"\xc6" + len(value).to_bytes(4, "big")  # bin 32
            packer.reset()
            pieces.append(head)
            pieces.append(value)
            total += len(head) + len(value)
        else:
            packer.pack(value)
    tail = packer.bytes()
    if tail:
        pieces.append(tail)
        total += len(tail)
    pieces[0] = _pack_len(total) + pieces[0]
    return pieces


_BUFFERS = (bytes, bytearray)


def unwritten(pieces: list[Any], n: int) -> list[Any]:
    """What is left of ``pieces`` (bytes-like, sent in order) once their first ``n`` bytes are written, as a
    partial ``writev`` leaves them: a piece written in part becomes a view of its rest, never a copy."""
    i = 0
    for p in pieces:
        size = p.nbytes if type(p) is memoryview else len(p)
        if n < size:
            break
        n -= size
        i += 1
    rest = pieces[i:]
    if n:
        rest[0] = memoryview(rest[0])[n:]
    return rest


def encode_response(correlation_id: int, code: int, body: Any) -> bytes:
    """A response frame: ``[correlation_id, code, body]``; code 0 is success, any other is an error table code."""
    return encode_frame([correlation_id, code, body])


def encode_response_parts(correlation_id: int, code: int, body: Any) -> tuple[bytes, bytes]:
    """``encode_response`` as (length prefix, msgpack body), so a large answer is sent without one more copy."""
    packed = _packb([correlation_id, code, body], use_bin_type=True)
    return _pack_len(len(packed)), packed


def encode_fetch_answer_parts(correlation_id: int, rows: list[list[Any]]) -> list[bytes | memoryview]:
    """The frame of a successful fetch answer, ``[cid, 0, {"partitions": rows}]``, as pieces to send in order:
    each row's ``data`` (its sixth element) is left out of the msgpack buffer and sent as its own piece after its
    bin header, so the stored batches are never copied by the encoder. Elements after ``data`` follow it; trailing
    ones that are None are left out. Decodes as ``encode_response`` would."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    packer.pack_array_header(3)
    packer.pack(correlation_id)
    packer.pack(0)
    packer.pack_map_header(1)
    packer.pack("partitions")
    packer.pack_array_header(len(rows))
    pieces: list[bytes | memoryview] = []
    total = 0
    for row in rows:
        fields = len(row)
        while fields > 6 and row[fields - 1] is None:
            fields -= 1
        packer.pack_array_header(fields)
        for value in row[:5]:
            packer.pack(value)
        data = row[5]
        if len(data) < 4096:  # small data: copying beats another piece
            packer.pack(data)
        else:
            n = len(data)
            head = packer.bytes() + (b"\xc5" + n.to_bytes(2, "big") if n < 65536 else b"\xc6" + n.to_bytes(4, "big"))
            packer.reset()
            pieces.append(head)
            pieces.append(data)
            total += len(head) + len(data)
        for value in row[6:fields]:
            packer.pack(value)
    tail = packer.bytes()
    pieces.append(tail)
    total += len(tail)
    return [_pack_len(total), *pieces]


class FrameDecoder:
    """Incremental frame decoder: ``feed`` bytes, take whole frame bodies (undecoded msgpack bytes) one at a time
    with ``next_frame``, so a server can stop taking frames (and stop reading) the moment its bounds are reached.

    ``next_frame`` raises ``FrameTooLargeError`` as soon as a length prefix announces more than ``frame_bytes_max``
    bytes, before buffering the body, so a peer cannot make us hold an oversize frame; the decoder is left as it
    was (every later call raises again).
    """

    __slots__ = ("_buf", "_pos", "frame_bytes_max")

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.frame_bytes_max = frame_bytes_max

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[bytes]:
        """Append ``data``. Returns an iterator over the frames now complete (``next_frame`` until None), for
        callers that take them all at once; a caller that takes them one by one may ignore it."""
        buf = self._buf
        pos = self._pos
        if pos:
            # Drop what was consumed: one move per feed (a reader that takes every frame before feeding again
            # moves less than one frame each time).
            if pos == len(buf):
                buf.clear()
            else:
                del buf[:pos]
            self._pos = 0
        buf += data
        return iter(self.next_frame, None)

    def next_frame(self) -> bytes | None:
        """The next complete frame body (a copy), or None until more bytes are fed."""
        view = self.next_frame_view()
        if view is None:
            return None
        with view:
            return bytes(view)

    def next_frame_view(self) -> memoryview | None:
        """``next_frame`` without its copy: a view of the next complete frame body in the buffer, or None. The
        caller must ``release()`` it before the next ``feed`` (the buffer cannot move while a view is held); a
        server decodes each frame before reading more, so a large produce is copied once (by the decoder), not
        twice."""
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < 4:
            return None
        (n,) = _unpack_len(buf, pos)
        if n > self.frame_bytes_max:
            limit = self.frame_bytes_max
            raise FrameTooLargeError(f"frame of {n} bytes exceeds frame_bytes_max={limit}", frame_bytes_max=limit)
        end = pos + 4 + n
        if end > len(buf):
            return None
        self._pos = end
        with memoryview(buf) as mv:
            return mv[pos + 4 : end]

    @property
    def buffered_bytes(self) -> int:
        """Bytes fed and not yet taken as frames."""
        return len(self._buf) - self._pos


def decode_message(body: bytes | memoryview) -> Any:
    """Decode one frame body; malformed msgpack raises ``InvalidRequestError``."""
    try:
        return _unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise InvalidRequestError(f"frame is not valid msgpack: {exc}") from None


def decode_request(body: bytes | memoryview) -> tuple[int, str, dict[str, Any]]:
    """Decode ``[correlation_id, api, body]``; raises ``InvalidRequestError`` naming what is wrong.

    If the envelope is readable enough to carry a correlation id, ``InvalidRequestError.details`` has it under
    ``correlation_id`` so the error can be answered to the right request.
    """
    msg = decode_message(body)
    if not isinstance(msg, (list, tuple)) or len(msg) != 3:
        raise InvalidRequestError("request must be a 3-element array [correlation_id, api, body]")
    cid, api, args = msg
    if not isinstance(cid, int) or isinstance(cid, bool) or cid < 0:
        raise InvalidRequestError("correlation_id must be a non-negative integer")
    if not isinstance(api, str):
        raise InvalidRequestError("api must be a string", correlation_id=cid)
    if not isinstance(args, dict):
        raise InvalidRequestError(f"body of {api!r} must be a map", correlation_id=cid)
    return cid, api, args


def decode_response(body: bytes) -> tuple[int, int, Any]:
    """Decode ``[correlation_id, code, body]`` (client side)."""
    msg = decode_message(body)
    if not isinstance(msg, (list, tuple)) or len(msg) != 3:
        raise InvalidRequestError("response must be a 3-element array [correlation_id, code, body]")
    return msg[0], msg[1], msg[2]
