# Small file primitives shared by the log: atomic self-checking writes, directory fsync, and the CRC framing used
# by topic metadata and index files. Every function blocks (call it from a worker thread, or at start); atomic
# writes are safe from several threads at once and keep the newest of saves started in order. Must not know about
# topics, partitions or batches.
from __future__ import annotations

import itertools
import logging
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Callable

from millpond.broker.core.log import faults
from millpond.broker.wire.errors import StorageError

_CRC = struct.Struct(">I")
_save_lock = threading.Lock()  # atomic writes one at a time: they share tmp names, and the version check below
_saved: dict[str, int] = {}  # path -> version of the newest versioned save on disk
_versions = itertools.count(1)  # next() on a count is atomic under the GIL
_log = logging.getLogger("millpond.log")


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


def next_save_version() -> int:
    """A number ordering saves: take it where the save starts (on the event loop), pass it as ``version`` to the
    write that runs later in a worker thread. Increasing across the process."""
    return next(_versions)


def write_atomic(path: Path, data: bytes, *, version: int | None = None) -> bool:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new content: tmp, fsync, rename, fsync dir.

    Safe from worker threads: writes never interleave, and with ``version`` (``next_save_version``) a save older
    than the one already on disk is skipped (returns False): two saves started in order never leave the older
    content, whichever thread runs first. Raises ``StorageError``.
    """
    key = os.fspath(path)
    tmp = path.with_name(path.name + ".tmp")
    with _save_lock:
        if version is not None and _saved.get(key, 0) > version:
            return False
        try:
            write_file(tmp, data, fsync=True)
            if faults.armed:
                faults.hit(path.suffix[1:])  # "snapshot": a producer state snapshot written, not yet in place
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as exc:
            error = StorageError(f"cannot write {path}: {exc.strerror or exc}")
            _log.error("%s", error.message)  # e.g. a full disk: whoever is answered, the operator sees it here
            raise error from None
        if version is not None:
            _saved[key] = version
    return True


def read_file(path: Path) -> bytes | None:
    """The content of ``path``, or None if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def save_record(path: Path, obj: object, *, version: int | None = None) -> bool:
    """Durably replace ``path`` with ``obj`` as sealed msgpack (broker settings such as limit policies). ``version``
    as for ``write_atomic`` (False: a newer save was already on disk). Raises ``StorageError``.
    """
    import msgpack

    return write_atomic(path, seal(msgpack.packb(obj, use_bin_type=True)), version=version)


def record_saver(path: Path, obj: object) -> Callable[[], bool]:
    """On the event loop, as a save starts: encode ``obj`` and take its version now; returns the blocking write
    (``save_record``'s) for a worker thread. Of several savers of one path, the last made wins on disk."""
    import msgpack

    data = seal(msgpack.packb(obj, use_bin_type=True))
    version = next_save_version()
    return lambda: write_atomic(path, data, version=version)


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


# "auto" syncs the whole filesystem once for a plan covering this many partitions or more; below it a partition's
# own fdatasync costs about as much and leaves other programs' dirty pages alone. python -m millpond.bench.sync_plan
# on this machine's ext4 (ms per plan, split over threads against one syncfs): 64 partitions 6.4 / 2.3, 16: 2.7 /
# 1.1, 4: 1.0 / 0.64; 1 partition 0.48 / 0.70. 64 fdatasyncs cost about 5 ms of system CPU, a syncfs about 2.
SYNCFS_AUTO_MIN = 4


def _syncfs_call() -> Callable[[int], int] | None:
    """libc's syncfs(2), or None where it is missing or its answer does not report write-back errors (Linux
    before 5.8 returned 0 whatever happened, so a failed write could be acknowledged)."""
    import ctypes
    import ctypes.util
    import platform

    if os.uname().sysname != "Linux":
        return None
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return None
    if (major, minor) < (5, 8):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        call = libc.syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int]
    call.restype = ctypes.c_int

    def syncfs(fd: int) -> int:
        return 0 if call(fd) == 0 else ctypes.get_errno()

    return syncfs


class FilesystemSync:
    """One syncfs(2) of the filesystem holding ``directory``: every file's data and metadata on it made durable in
    one call, as many fdatasyncs and directory fsyncs would, with one journal commit instead of one per file.
    It also writes back other programs' dirty pages on that filesystem, which a sync then waits for: the reason
    "auto" keeps it for plans over many partitions and ``sync_method = "fsync"`` exists. ``device`` is the
    filesystem's st_dev (a file elsewhere is not covered). Errors: OSError from ``sync``; ``open`` raises
    StorageError naming the directory when syncfs is not available and ``required``."""

    __slots__ = ("device", "min_parts", "_fd", "_call")

    def __init__(self, fd: int, call: Callable[[int], int], min_parts: int) -> None:
        self._fd = fd
        self._call = call
        self.device = os.fstat(fd).st_dev
        self.min_parts = min_parts

    @classmethod
    def open(cls, directory: Path, method: str) -> "FilesystemSync | None":
        """The sync for ``method`` ("auto": plans of SYNCFS_AUTO_MIN partitions or more, when available; "syncfs":
        plans of 2 or more, and StorageError when not available; "fsync": None)."""
        if method == "fsync":
            return None
        call = _syncfs_call()
        if call is None:
            if method == "syncfs":
                raise StorageError('sync_method = "syncfs" needs Linux 5.8 or later (syncfs(2) reporting write-back '
                                   'errors); use "auto" or "fsync"')
            return None
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        return cls(fd, call, SYNCFS_AUTO_MIN if method == "auto" else 2)

    def sync(self) -> None:
        """Blocking: syncfs(2). Raises OSError (a write-back error anywhere on the filesystem since the last call,
        ours or not: the plan fails and nothing it covers is acknowledged)."""
        err = self._call(self._fd)
        if err:
            raise OSError(err, f"syncfs: {os.strerror(err)}")

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
