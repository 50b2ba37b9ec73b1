# Small file primitives shared by the log: atomic self-checking writes, directory fsync, and the CRC framing used
# by topic metadata and index files. Must not know about topics, partitions or batches.
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from millpond.broker.wire.errors import StorageError

_CRC = struct.Struct(">I")


def seal(body: bytes) -> bytes:
    """``body`` followed by its CRC-32, so a torn or rotten file is recognised when read back."""
    return body + _CRC.pack(zlib.crc32(body))


def unseal(data: bytes) -> bytes | None:
    """The body of a ``seal``ed blob, or None if it is too short or its CRC does not match."""
    if len(data) < _CRC.size:
        return None
    body = data[: -_CRC.size]
    if zlib.crc32(body) != _CRC.unpack_from(data, len(body))[0]:
        return None
    return body


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, *, fsync: bool) -> None:
    """Write ``data`` as the whole content of ``path`` (no atomicity; callers rename or self-check)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new content: tmp, fsync, rename, fsync dir.

    Raises ``StorageError``.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        write_file(tmp, data, fsync=True)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None


def read_file(path: Path) -> bytes | None:
    """The content of ``path``, or None if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def save_record(path: Path, obj: object) -> None:
    """Durably replace ``path`` with ``obj`` as sealed msgpack (broker settings such as limit policies).

    Raises ``StorageError``.
    """
    import msgpack

    write_atomic(path, seal(msgpack.packb(obj, use_bin_type=True)))


def load_record(path: Path) -> object | None:
    """What ``save_record`` wrote, or None if the file does not exist. Raises ``StorageError`` if it fails its
    CRC (an atomic write never leaves a torn file, so that is damage, not a crash)."""
    import msgpack

    raw = read_file(path)
    if raw is None:
        return None
    body = unseal(raw)
    if body is None:
        raise StorageError(f"{path} fails its CRC check")
    return msgpack.unpackb(body, raw=False)
