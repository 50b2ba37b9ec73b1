# Producer state snapshots of one partition directory, as Kafka's ProducerStateManager keeps them: a file
# 00000000000000001234.snapshot holding the idempotent producers' recent batches as of offset 1234 (taken when a
# segment rolls), so a restart rebuilds the state from the newest snapshot plus the batches after it instead of
# from the last segment alone. Every function blocks (a worker thread, or start). Owns only the .snapshot files;
# must not know about segments, producers' rules or the wire protocol.
from __future__ import annotations

import os
from pathlib import Path

import msgpack

from millpond.broker.core.log.files import read_file, seal, unseal, write_atomic

SUFFIX = ".snapshot"
KEEP = 2  # snapshots kept: the newest, and one to fall back on if the newest is torn
FORMAT = 1


def encode(offset: int, plain: list) -> bytes:
    """A snapshot file's contents: ``plain`` (``ProducerStates.to_plain``) as of ``offset``, sealed with a CRC."""
    return seal(msgpack.packb({"format": FORMAT, "offset": offset, "producers": plain}, use_bin_type=True))


class FileSnapshots:
    """The producer state snapshots in one partition directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, offset: int) -> Path:
        return self.directory / f"{offset:020d}{SUFFIX}"

    def offsets(self) -> list[int]:
        """Offsets of the snapshot files present, newest first. Raises OSError."""
        found = []
        for entry in os.scandir(self.directory):
            stem, _, ext = entry.name.partition(".")
            if "." + ext == SUFFIX and len(stem) == 20 and stem.isdigit():
                found.append(int(stem))
        return sorted(found, reverse=True)

    def load(self, offset: int) -> list | None:
        """The producers of the snapshot at ``offset``, or None if it is missing, torn or not a snapshot (a crash
        while it was written: the caller falls back to an older one). Raises OSError."""
        data = read_file(self._path(offset))
        body = None if data is None else unseal(data)
        if body is None:
            return None
        try:
            doc = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException):
            return None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("offset") != offset:
            return None
        producers = doc.get("producers")
        return producers if isinstance(producers, list) else None

    def save(self, offset: int, contents: bytes) -> None:
        """Write the snapshot at ``offset`` durably (tmp, fsync, rename, directory fsync), then remove all but the
        ``KEEP`` newest. Raises ``StorageError`` or OSError."""
        write_atomic(self._path(offset), contents)
        for old in self.offsets()[KEEP:]:
            self.remove(old)

    def remove(self, offset: int) -> None:
        """Remove one snapshot (one that lies beyond the log end after a torn tail was cut). Raises OSError."""
        try:
            os.unlink(self._path(offset))
        except FileNotFoundError:
            pass
