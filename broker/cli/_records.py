# How `millpond consume` writes records and where it starts, in kcat's words: -f format strings (%t %p %o %k %s %h
# %T, as kcat -f), -K key separators and -o offset specs (beginning, end, N, -N, s@TIMESTAMP_MS). Knows records and
# bytes, not the client or argparse.
from __future__ import annotations

from typing import Any, Callable

_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\", "0": b"\0"}


def _headers(r: Any) -> bytes:
    return b",".join(k.encode() + b"=" + (v or b"") for k, v in (r.headers or {}).items())


# kcat -f: %t topic, %p partition, %o offset, %k key, %s value, %h headers (name=value, comma-separated), %T
# timestamp (epoch ms), %K and %S key and value lengths (-1 for none), %% a percent sign
_FIELDS: dict[str, Callable[[Any], bytes]] = {
    "t": lambda r: r.topic.encode(),
    "p": lambda r: b"%d" % r.partition,
    "o": lambda r: b"%d" % r.offset,
    "k": lambda r: r.key or b"",
    "s": lambda r: r.value or b"",
    "h": _headers,
    "T": lambda r: b"%d" % r.timestamp_ms,
    "K": lambda r: b"%d" % (-1 if r.key is None else len(r.key)),
    "S": lambda r: b"%d" % (-1 if r.value is None else len(r.value)),
}


def compile_format(fmt: str) -> Callable[[list[Any]], bytes]:
    """A kcat ``-f`` string -> a function rendering a list of records to bytes (no newline is added: say ``\\n``).
    Raises ``ValueError`` naming an unknown ``%x`` or ``\\x``."""
    pieces: list[bytes | Callable[[Any], bytes]] = []
    literal = bytearray()
    i = 0
    while i < len(fmt):
        ch = fmt[i]
        if ch in "%\\" and i + 1 < len(fmt):
            nxt = fmt[i + 1]
            i += 2
            if ch == "\\":
                if nxt not in _ESCAPES:
                    raise ValueError(f"unknown escape \\{nxt} in the format (known: \\n \\r \\t \\\\ \\0)")
                literal += _ESCAPES[nxt]
            elif nxt == "%":
                literal += b"%"
            elif nxt in _FIELDS:
                if literal:
                    pieces.append(bytes(literal))
                    literal.clear()
                pieces.append(_FIELDS[nxt])
            else:
                raise ValueError(f"unknown %{nxt} in the format (known: %t %p %o %k %s %h %T %K %S %%)")
            continue
        literal += ch.encode()
        i += 1
    if literal:
        pieces.append(bytes(literal))

    def render(records: list[Any]) -> bytes:
        return b"".join(p if p.__class__ is bytes else p(r) for r in records for p in pieces)  # type: ignore[misc]

    return render


def key_separated(sep: str) -> str:
    """kcat -K on consume: the key, ``sep``, the value, a newline (as a -f string)."""
    return "%k" + sep.replace("\\", "\\\\").replace("%", "%%") + "%s\\n"


def parse_offset(spec: str) -> tuple[str, int]:
    """kcat's -o: ``beginning``, ``end``, ``N`` (that offset), ``-N`` (N before the end), ``s@TS`` (the first
    record at or after TS, epoch ms) -> ``(kind, number)``; raises ``ValueError``."""
    if spec in ("beginning", "end"):
        return spec, 0
    if spec.startswith("s@"):
        try:
            return "timestamp", int(spec[2:])
        except ValueError:
            pass
    else:
        try:
            n = int(spec)
        except ValueError:
            pass
        else:
            return ("from_end", -n) if spec.startswith("-") else ("offset", n)
    raise ValueError(f"-o takes beginning, end, an offset N, -N (N before the end) or s@TIMESTAMP_MS, got {spec!r}")
