# The set of topic logs under one data directory: topic creation and deletion (durable, crash-safe), loading and
# recovering every partition on open, retention across all partitions, and the dirty list the fsync task drains.
# Owns <data_dir>/topics/. Must not know about the wire protocol, sockets, trio or clocks (now_ms is passed in).
from __future__ import annotations

import fcntl
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from millpond.broker.config import FSYNC_MODES, TopicDefaults
from millpond.broker.core.log.files import fsync_dir, read_file, seal, unseal, write_atomic, write_file
from millpond.broker.core.log.partition import PartitionLog
from millpond.broker.core.log.topic_config import TopicConfig, validate_topic_name
from millpond.broker.wire.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    StorageError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

META_FILE = "topic.meta"
LOCK_FILE = "broker.lock"  # holds the pid of the broker that has the data directory open
META_FORMAT = 1
# '~' is not a topic-name character, so these never collide with a topic directory.
_STAGING = "~staging"  # topics being created: complete, then renamed into place
_TRASH = "~trash"  # topics being deleted: renamed here first, so a crash never leaves half a topic visible


@dataclass(slots=True, eq=False)
class Topic:
    """A topic: its name, config and partitions (index = partition number)."""

    name: str
    config: TopicConfig
    partitions: list[PartitionLog] = field(default_factory=list)


class LogManager:
    """Every topic log under ``data_dir``. Call ``open`` once before anything else, ``close`` at the end.

    ``topics`` maps name -> Topic; read it, never change it. ``fsync_mode``: "always" (the high watermark moves
    only in ``mark_durable``), "interval" or "never" (it follows the log end).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        defaults: TopicDefaults,
        batch_bytes_max: int,
        partitions_max: int,
        fsync_mode: str,
        logger: logging.Logger | None = None,
    ) -> None:
        if fsync_mode not in FSYNC_MODES:
            raise InvalidConfigError(f"fsync must be one of {', '.join(FSYNC_MODES)}, got {fsync_mode!r}")
        self.data_dir = Path(data_dir)
        self.defaults = defaults
        self.batch_bytes_max = batch_bytes_max
        self.partitions_max = partitions_max
        self.fsync_mode = fsync_mode
        self.topics: dict[str, Topic] = {}
        self._log = logger or logging.getLogger("broker.core.log")
        self._dirty: set[PartitionLog] = set()
        self._root = self.data_dir / "topics"
        self._opened = False
        self._lock_fd: int | None = None
        self._closed = False

    # -- opening ---------------------------------------------------------------------------------------------------

    def open(self, now_ms: int) -> None:
        """Load every topic from disk and recover each partition (torn tails cut and logged). Finishes deletions
        and abandons creations a crash interrupted. Raises ``StorageError`` if the data directory is unusable.
        """
        if self._opened:
            raise RuntimeError("LogManager.open called twice")
        self._opened = True
        self._lock_data_dir()
        try:
            for sub in (self._root, self._root / _STAGING, self._root / _TRASH):
                sub.mkdir(parents=True, exist_ok=True)
            for sub in (_STAGING, _TRASH):
                for entry in os.scandir(self._root / sub):
                    shutil.rmtree(entry.path, ignore_errors=True)
            names = sorted(e.name for e in os.scandir(self._root) if e.is_dir() and not e.name.startswith("~"))
        except OSError as exc:
            raise StorageError(f"cannot open data directory {self.data_dir}: {exc}") from None
        for name in names:
            topic = self._load_topic(name, now_ms)
            if topic is not None:
                self.topics[name] = topic
        self._log.info("opened %d topic(s) from %s", len(self.topics), self._root)

    def _lock_data_dir(self) -> None:
        """Hold an exclusive lock on the data directory while open: two brokers appending to the same files would
        give the same offsets to different records. The OS drops the lock when the process dies (kill -9 too)."""
        try:
            Path(self.data_dir).mkdir(parents=True, exist_ok=True)
            fd = os.open(Path(self.data_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open data directory {self.data_dir}: {exc.strerror or exc}") from None
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

    def _load_topic(self, name: str, now_ms: int) -> Topic | None:
        directory = self._root / name
        try:
            validate_topic_name(name, internal=True)
            raw = read_file(directory / META_FILE)
            body = unseal(raw) if raw is not None else None
            if body is None:
                raise ValueError(f"{META_FILE} is missing or fails its CRC")
            meta = msgpack.unpackb(body)
            if not (isinstance(meta, dict) and meta.get("format") == META_FORMAT and meta.get("name") == name):
                raise ValueError(f"{META_FILE} is not a format-{META_FORMAT} record of this topic")
            count = meta.get("partitions")
            if type(count) is not int or count < 1:
                raise ValueError(f"{META_FILE} has a bad partition count {count!r}")
            config = TopicConfig.from_wire(meta.get("config"), self.defaults)
        except Exception as exc:  # one unreadable topic must not stop the broker; its files are left alone
            self._log.error("skipping topic directory %s: %s", directory, exc)
            return None
        topic = Topic(name, config)
        topic.partitions.extend(self._open_partitions(topic, range(count), now_ms))
        return topic

    def _open_partitions(self, topic: Topic, numbers: range, now_ms: int) -> list[PartitionLog]:
        """Open (recover) these partitions of ``topic``; on a StorageError the ones opened are closed again."""
        opened: list[PartitionLog] = []
        try:
            for p in numbers:
                log = self._new_partition(topic, p)
                opened.append(log)
                log.open(now_ms)
        except StorageError:
            for log in opened:
                log.close_quietly()
            raise
        return opened

    def _new_partition(self, topic: Topic, p: int) -> PartitionLog:
        return PartitionLog(
            topic.name, p, self._root / topic.name / str(p), topic.config,
            fsync_mode=self.fsync_mode, dirty=self._dirty, logger=self._log,
        )

    # -- topics ----------------------------------------------------------------------------------------------------

    def create_topic(
        self, name: str, partitions: int, config: dict | None, now_ms: int, *, internal: bool = False
    ) -> Topic:
        """Create a topic with ``partitions`` empty partitions and ``config`` (wire keys, over the defaults).
        ``internal``: the broker creating one of its own ``__millpond_*`` topics (refused for any other caller).

        Durable before it returns: built under a staging name (metadata sealed with a CRC and fsynced), then
        renamed into place. Raises ``InvalidTopicNameError``, ``TopicAlreadyExistsError``,
        ``InvalidPartitionsError`` (1..partitions_max), ``InvalidConfigError``, ``StorageError``; nothing is
        created on disk when it raises.
        """
        validate_topic_name(name, internal=internal)
        if name in self.topics:
            raise TopicAlreadyExistsError(f"topic {name!r} already exists", topic=name)
        if type(partitions) is not int or not 1 <= partitions <= self.partitions_max:
            raise InvalidPartitionsError(
                f"partitions must be an integer from 1 to {self.partitions_max}, got {partitions!r}",
                partitions_max=self.partitions_max,
            )
        topic_config = TopicConfig.from_wire(config, self.defaults)
        final = self._root / name
        if final.exists():
            raise StorageError(f"a directory for topic {name!r} exists but could not be loaded; see the log at start")
        staging = self._unused(self._root / _STAGING)
        meta = _sealed_meta(name, partitions, topic_config)
        try:
            staging.mkdir()
            _make_partition_dirs(staging, range(partitions))
            write_atomic(staging / META_FILE, meta)
            os.rename(staging, final)
            fsync_dir(self._root)
            fsync_dir(self._root / _STAGING)
        except (OSError, StorageError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise StorageError(f"cannot create topic {name!r}: {exc}") from None
        topic = Topic(name, topic_config)
        topic.partitions.extend(self._open_partitions(topic, range(partitions), now_ms))
        self.topics[name] = topic
        self._log.info("created topic %s with %d partition(s), config %s", name, partitions, topic_config.to_wire())
        return topic

    def add_partitions(self, name: str, total: int, now_ms: int) -> Topic:
        """Grow ``name`` to ``total`` partitions (Kafka CreatePartitions): existing partitions keep their records;
        keyed records may map to other partitions from now on. The new partitions are created on disk first and
        the metadata rewritten atomically after, so a crash in between leaves the old count (the stray
        directories are replaced on the next try). Raises ``UnknownTopicOrPartitionError``,
        ``InvalidPartitionsError`` (not more than now, or over partitions_max), ``StorageError``.
        """
        topic = self._topic(name)
        current = len(topic.partitions)
        if type(total) is not int or not current < total <= self.partitions_max:
            raise InvalidPartitionsError(
                f"topic {name!r} has {current} partition(s); the new total must be from {current + 1} to "
                f"{self.partitions_max}, got {total!r}",
                partitions=current, partitions_max=self.partitions_max,
            )
        directory = self._root / name
        meta = _sealed_meta(name, total, topic.config)
        try:
            for p in range(current, total):
                shutil.rmtree(directory / str(p), ignore_errors=True)  # strays of an interrupted earlier try
            _make_partition_dirs(directory, range(current, total))
            fsync_dir(directory)
            write_atomic(directory / META_FILE, meta)
        except (OSError, StorageError) as exc:
            raise StorageError(f"cannot add partitions to topic {name!r}: {exc}") from None
        topic.partitions.extend(self._open_partitions(topic, range(current, total), now_ms))
        self._log.info("topic %s grew from %d to %d partitions", name, current, total)
        return topic

    def delete_topic(self, name: str) -> None:
        """Close the topic's files and remove them. The directory is first renamed to a trash name (durably), so a
        crash mid-delete never brings back half a topic; ``open`` finishes the removal. Raises
        ``UnknownTopicOrPartitionError``, ``StorageError``.
        """
        topic = self._topic(name)
        trash = self._unused(self._root / _TRASH)
        try:
            os.rename(self._root / name, trash)
            fsync_dir(self._root)
        except OSError as exc:
            raise StorageError(f"cannot delete topic {name!r}: {exc}") from None
        del self.topics[name]
        for log in topic.partitions:
            log.close_quietly()
        shutil.rmtree(trash, ignore_errors=True)
        self._log.info("deleted topic %s", name)

    def _topic(self, name: str) -> Topic:
        topic = self.topics.get(name) if isinstance(name, str) else None
        if topic is None:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}", topic=name if isinstance(name, str) else None)
        return topic

    def partition(self, topic: str, partition: int) -> PartitionLog:
        """The log of ``topic``/``partition``. Raises ``UnknownTopicOrPartitionError`` naming the valid range."""
        t = self._topic(topic)
        count = len(t.partitions)
        if type(partition) is not int or not 0 <= partition < count:
            raise UnknownTopicOrPartitionError(
                f"topic {topic!r} has partitions 0..{count - 1}, not {partition!r}", topic=topic, partitions=count
            )
        return t.partitions[partition]

    @staticmethod
    def _unused(parent: Path) -> Path:
        n = 0
        while (parent / str(n)).exists():
            n += 1
        return parent / str(n)

    # -- durability, retention, closing ----------------------------------------------------------------------------

    def dirty(self) -> list[PartitionLog]:
        """Partitions with bytes appended since their last ``mark_durable`` caught up with their log end."""
        return list(self._dirty)

    def enforce_retention(self, now_ms: int) -> int:
        """Apply every topic's retention to each of its partitions; returns the number of segments deleted."""
        deleted = 0
        for topic in list(self.topics.values()):
            for log in topic.partitions:
                try:
                    deleted += log.enforce_retention(now_ms)
                except StorageError as exc:  # one full or broken partition must not stop retention elsewhere
                    self._log.error("retention of %s/%s failed: %s", log.topic, log.partition, exc)
        return deleted

    def abandon(self) -> None:
        """Let go of everything as a killed process would: fds closed without fsync or index files, lock released.
        For crash tests and for giving up after a failed start."""
        for topic in self.topics.values():
            for log in topic.partitions:
                log.close_quietly()
        self._closed = True
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def close(self) -> None:
        """Fsync every partition, write index files, close fds. Idempotent. Raises the first ``StorageError`` after
        trying every partition.
        """
        if self._closed:
            return
        self._closed = True
        first: StorageError | None = None
        try:
            self._close_partitions()
        except StorageError as exc:
            first = exc
        self._unlock()
        if first is not None:
            raise first

    def _close_partitions(self) -> None:
        first: StorageError | None = None
        for topic in self.topics.values():
            for log in topic.partitions:
                try:
                    log.close()
                except StorageError as exc:
                    self._log.error("%s", exc)
                    first = first or exc
        if first is not None:
            raise first


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
