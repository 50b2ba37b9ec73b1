# The file implementation of the topic-level Storage (store.py): <data_dir>/broker.lock and <data_dir>/topics/, one
# directory per topic with its sealed metadata and one directory per partition; creations built under ~staging and
# renamed into place, marked as creating until their partitions opened, deletions renamed to ~trash first, so a
# crash or a failed creation never leaves half a topic visible. Every method blocks (startup or a worker thread). Must not know about producers, high watermarks, clocks or the wire protocol.
from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import msgpack

from millpond.broker.core.log.batch_format import BatchFormat
from millpond.broker.core.log.file_store import FilePartitionStore
from millpond.broker.core.log.files import fsync_dir, read_file, seal, unseal, write_atomic, write_file
from millpond.broker.core.log.producer_snapshots import FileSnapshots
from millpond.broker.core.log.topic_config import TopicConfig
from millpond.broker.wire.errors import StorageError

META_FILE = "topic.meta"
LOCK_FILE = "broker.lock"  # holds the pid of the broker that has the data directory open
# 2: batches are Kafka's record batch v2. 1 was millpond's own pre-release batch layout, never released: a data
# directory holding it is refused at open (README, "Upgrading"), never read or rewritten.
META_FORMAT = 2
OLD_FORMATS = {1: "millpond's pre-release batch format (a 56-byte header, CRC-32, msgpack records)"}
# '~' is not a topic-name character, so these never collide with a topic directory.
STAGING = "~staging"  # topics being created: complete, then renamed into place
TRASH = "~trash"  # topics being deleted: renamed here first, so a crash never leaves half a topic visible
# In a topic's directory from its staging until its partitions are open: a topic whose creation was never answered.
# A start finding it removes the topic (as a creation that failed does at once).
CREATING = "creating"


class FileStorage:
    """Topics as directories under ``data_dir/topics``. See ``store.Storage`` for the contract."""

    needs_thread = True

    def __init__(self, data_dir: Path, fmt: BatchFormat, logger: logging.Logger) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "topics"
        self.fmt = fmt
        self._log = logger
        self._lock_fd: int | None = None

    def open(self) -> list[tuple[str, int, Any]]:
        self._lock_data_dir()
        try:
            for sub in (self.root, self.root / STAGING, self.root / TRASH):
                sub.mkdir(parents=True, exist_ok=True)
            for sub in (STAGING, TRASH):
                for entry in os.scandir(self.root / sub):
                    shutil.rmtree(entry.path, ignore_errors=True)
            names = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("~"))
        except OSError as exc:
            raise StorageError(f"cannot open data directory {self.data_dir}: {_dir_problem(exc)}") from None
        found = []
        old: dict[int, list[str]] = {}
        for i, name in enumerate(names):
            directory = self.root / name
            if os.path.exists(directory / CREATING):
                self._log.warning("removing topic %s: its creation did not finish (never answered)", name)
                try:
                    self.remove_topic(name, -1 - i)()  # negative: never a ticket of this process
                except StorageError as exc:
                    self._log.error("skipping topic directory %s: %s", directory, exc.message)
                continue
            try:
                raw = read_file(directory / META_FILE)
                body = unseal(raw) if raw is not None else None
                if body is None:
                    raise ValueError(f"{META_FILE} is missing or fails its CRC")
                meta = msgpack.unpackb(body)
                if isinstance(meta, dict) and meta.get("format") in OLD_FORMATS and meta.get("name") == name:
                    old.setdefault(meta["format"], []).append(name)
                    continue
                if not (isinstance(meta, dict) and meta.get("format") == META_FORMAT and meta.get("name") == name):
                    raise ValueError(f"{META_FILE} is not a format-{META_FORMAT} record of this topic")
                count = meta.get("partitions")
                if type(count) is not int or count < 1:
                    raise ValueError(f"{META_FILE} has a bad partition count {count!r}")
            except Exception as exc:  # one unreadable topic must not stop the broker; its files are left alone
                self._log.error("skipping topic directory %s: %s", directory, exc)
                continue
            found.append((name, count, meta.get("config")))
        if old:
            self.close()
            fmt, topics = min(old.items())
            raise StorageError(
                f"data directory {self.data_dir} holds topics ({', '.join(topics)}) stored in {OLD_FORMATS[fmt]}, "
                f"which this broker does not read: it stores Kafka's record batch v2. No released millpond wrote "
                f"that format; move the directory aside or delete it, then start again")
        return found

    def _lock_data_dir(self) -> None:
        """Hold an exclusive lock on the data directory while open: two brokers appending to the same files would
        give the same offsets to different records. The OS drops the lock when the process dies (kill -9 too)."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open data directory {self.data_dir}: {_dir_problem(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StorageError(
                f"data directory {self.data_dir} is in use by another broker (pid {holder}); stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def create_topic(self, name: str, partitions: int, config: TopicConfig, ticket: int) -> None:
        final = self.root / name
        if final.exists():
            raise StorageError(f"a directory for topic {name!r} exists but could not be loaded; see the log at start")
        staging = self.root / STAGING / str(ticket)
        try:
            staging.mkdir()
            write_file(staging / CREATING, b"", fsync=True)
            _make_partition_dirs(staging, range(partitions))
            write_atomic(staging / META_FILE, _sealed_meta(name, partitions, config))
            os.rename(staging, final)
            fsync_dir(self.root)
            fsync_dir(self.root / STAGING)
        except (OSError, StorageError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise StorageError(f"cannot create topic {name!r}: {exc}") from None

    def created(self, name: str) -> None:
        directory = self.root / name
        try:
            os.unlink(directory / CREATING)
            fsync_dir(directory)
        except OSError as exc:
            raise StorageError(f"cannot finish creating topic {name!r}: {exc.strerror or exc}") from None

    def add_partitions(self, name: str, current: int, total: int, config: TopicConfig) -> None:
        """New partition directories first, the metadata rewritten atomically after: a crash in between leaves the
        old count (the stray directories are replaced on the next try)."""
        directory = self.root / name
        try:
            for p in range(current, total):
                shutil.rmtree(directory / str(p), ignore_errors=True)  # strays of an interrupted earlier try
            _make_partition_dirs(directory, range(current, total))
            fsync_dir(directory)
            write_atomic(directory / META_FILE, _sealed_meta(name, total, config))
        except (OSError, StorageError) as exc:
            raise StorageError(f"cannot add partitions to topic {name!r}: {exc}") from None

    def remove_partitions(self, name: str, current: int, total: int, config: TopicConfig) -> None:
        directory = self.root / name
        try:
            write_atomic(directory / META_FILE, _sealed_meta(name, current, config))
        except StorageError as exc:
            raise StorageError(f"cannot undo adding partitions to topic {name!r}: {exc.message}") from None
        for p in range(current, total):  # no longer counted: strays, replaced by the next try if left
            shutil.rmtree(directory / str(p), ignore_errors=True)

    def remove_topic(self, name: str, ticket: int) -> Callable[[], None]:
        trash = self.root / TRASH / str(ticket)
        try:
            os.rename(self.root / name, trash)
            fsync_dir(self.root)
        except OSError as exc:
            raise StorageError(f"cannot delete topic {name!r}: {exc}") from None
        return lambda: shutil.rmtree(trash, ignore_errors=True)  # what is left is removed on the next open

    def partition_store(self, topic: str, partition: int, config: TopicConfig, jobs: list) -> FilePartitionStore:
        return FilePartitionStore(f"{topic}/{partition}", self.root / topic / str(partition), config, self.fmt,
                                  jobs, self._log)

    def producer_snapshots(self, topic: str, partition: int) -> FileSnapshots:
        return FileSnapshots(self.root / topic / str(partition))

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


def _dir_problem(exc: OSError) -> str:
    """What went wrong making or entering a directory, in words: "File exists" alone does not say that the path
    the broker needs as a directory is a file."""
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        path = exc.filename if exc.filename is not None else "a path"
        if exc.errno == errno.EEXIST or os.path.exists(path):
            return f"{path} is a file, not a directory (give a directory, or a path to create one at)"
        return f"a part of {path} is a file, not a directory"
    return exc.strerror or str(exc)


def _sealed_meta(name: str, partitions: int, config: TopicConfig) -> bytes:
    """The topic's metadata file contents: a msgpack record sealed with its CRC."""
    meta = {"format": META_FORMAT, "name": name, "partitions": partitions, "config": config.to_wire()}
    return seal(msgpack.packb(meta))


def _make_partition_dirs(directory: Path, numbers: range) -> None:
    """Create (durably) the directory of each partition in ``numbers`` under ``directory``, with an empty first
    segment. Raises ``OSError``, ``StorageError``."""
    for p in numbers:
        pdir = directory / str(p)
        pdir.mkdir()
        write_file(pdir / f"{0:020d}.log", b"", fsync=True)
        fsync_dir(pdir)


__all__ = ["FileStorage", "LOCK_FILE", "META_FILE", "STAGING", "TRASH"]
