# The set of topic logs over one Storage (file or memory): loading and recovering every topic on open; topic
# creation, growth and deletion in two phases (validate and reserve on the loop, blocking work in a worker thread,
# apply on the loop); retention; the sync plans and background jobs the server runs off the loop. Must not know
# about files (the storage's), the wire protocol, sockets, trio or clocks (now_ms is passed in).
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from millpond.broker.config import FSYNC_MODES, STORAGE_KINDS, SYNC_METHODS, TopicDefaults
from millpond.broker.core.log.batch_format import V2, BatchFormat
from millpond.broker.core.log.file_topics import LOCK_FILE, META_FILE, FileStorage
from millpond.broker.core.log.files import FilesystemSync
from millpond.broker.core.log.memory_store import MemoryStorage
from millpond.broker.core.log.partition import PartitionLog
from millpond.broker.core.log.pending import PendingDelete, PendingPartitions, PendingTopic, SyncPlan
from millpond.broker.core.log.store import Storage
from millpond.broker.core.log.topic_config import TopicConfig, validate_topic_name
from millpond.broker.core.outcomes import Job
from millpond.broker.wire.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    MillpondError,
    StorageError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

__all__ = ["LOCK_FILE", "META_FILE", "LogManager", "Topic"]


@dataclass(slots=True, eq=False)
class Topic:
    """A topic: its name, config and partitions (index = partition number)."""

    name: str
    config: TopicConfig
    partitions: list[PartitionLog] = field(default_factory=list)


_PENDING_WORDS = {"create": "being created", "add_partitions": "getting partitions", "delete": "being deleted"}


class LogManager:
    """Every topic log of one broker. Call ``open`` once before anything else, ``close`` at the end.

    ``topics`` maps name -> Topic; read it, never change it. ``fsync_mode``: "always" (the high watermark moves
    only when a sync plan covers it), "interval" or "never" (it follows the log end). ``storage``: "file" (under
    ``data_dir``, which it locks) or "memory" (no directory: ``data_dir`` is ignored and reads None; no lock, no
    files, so other state placed beside the log's, such as limit policies, stays in memory too).

    On the loop, nothing here blocks: topic changes go through ``begin_*`` / ``PendingX.build()`` (worker thread) /
    ``finish_*``; durability through ``sync_plan()`` / ``SyncPlan.run()`` (worker thread) / ``synced``; other file
    work (the next segment's file, segments removed by ``enforce_retention``) through ``take_jobs()``. ``open``,
    ``close`` and the synchronous ``create_topic``, ``add_partitions``, ``delete_topic`` and ``run_jobs`` block:
    startup, shutdown and tests.
    """

    def __init__(
        self,
        data_dir: Path | None,
        *,
        defaults: TopicDefaults,
        batch_bytes_max: int,
        partitions_max: int,
        fsync_mode: str,
        storage: str = "file",
        sync_method: str = "auto",
        batch_format: BatchFormat = V2,
        logger: logging.Logger | None = None,
    ) -> None:
        if fsync_mode not in FSYNC_MODES:
            raise InvalidConfigError(f"fsync must be one of {', '.join(FSYNC_MODES)}, got {fsync_mode!r}")
        if sync_method not in SYNC_METHODS:
            raise InvalidConfigError(f"sync_method must be one of {', '.join(SYNC_METHODS)}, got {sync_method!r}")
        if storage not in STORAGE_KINDS:
            raise InvalidConfigError(f"storage must be one of {', '.join(STORAGE_KINDS)}, got {storage!r}")
        self._log = logger or logging.getLogger("millpond.log")
        # Memory storage uses no directory at all: no lock, no files (and so its owners, limit policies, none).
        self.data_dir = None if data_dir is None or storage == "memory" else Path(data_dir)
        if storage == "file":
            if self.data_dir is None:
                raise InvalidConfigError('storage = "file" needs a data directory')
            self._storage: Storage = FileStorage(self.data_dir, batch_format, self._log)
        else:
            self._storage = MemoryStorage(batch_format)
        self.storage = storage
        self.defaults = defaults
        self.batch_bytes_max = batch_bytes_max
        self.partitions_max = partitions_max
        self.fsync_mode = fsync_mode
        self.sync_method = sync_method
        self._filesystem: FilesystemSync | None = None  # one syncfs for plans over many partitions (files.py)
        self.format = batch_format
        self.topics: dict[str, Topic] = {}
        self._pending: dict[str, str] = {}  # reserved names -> the operation in progress
        self._dirty: set[PartitionLog] = set()
        self._rolled: set[PartitionLog] = set()
        self._jobs: list[Job] = []
        self._tickets = itertools.count()
        self._opened = False
        self._closed = False

    # -- opening ---------------------------------------------------------------------------------------------------

    def open(self, now_ms: int) -> None:
        """Blocking: load every topic and recover each partition (torn tails cut and logged). Finishes deletions
        and abandons creations a crash interrupted. Raises ``StorageError`` if the data directory is unusable."""
        if self._opened:
            raise RuntimeError("LogManager.open called twice")
        self._opened = True
        opened = self._storage.open()
        if self.storage == "file":
            try:
                self._filesystem = FilesystemSync.open(self.data_dir, self.sync_method)
            except BaseException:
                self._storage.close()
                raise
        for name, count, raw_config in opened:
            try:
                validate_topic_name(name, internal=True)
                config = TopicConfig.from_wire(raw_config, self.defaults)
            except MillpondError as exc:  # one unreadable topic must not stop the broker; its files are left alone
                self._log.error("skipping topic %s: %s", name, exc.message)
                continue
            topic = Topic(name, config)
            topic.partitions.extend(self._open_partitions(topic, range(count), now_ms))
            self.topics[name] = topic
        self._log.info("opened %d topic(s) (%s storage)", len(self.topics), self.storage)

    def _open_partitions(self, topic: Topic, numbers: range, now_ms: int) -> list[PartitionLog]:
        """Blocking: open (recover) these partitions of ``topic``; on a StorageError the opened ones are closed.
        Touches nothing shared (``build`` runs it in a worker thread)."""
        opened: list[PartitionLog] = []
        try:
            for p in numbers:
                log = PartitionLog(
                    topic.name, p, self._storage.partition_store(topic.name, p, topic.config, self._jobs),
                    topic.config, fsync_mode=self.fsync_mode, dirty=self._dirty, rolled=self._rolled,
                    fmt=self.format, logger=self._log, snapshots=self._storage.producer_snapshots(topic.name, p),
                    jobs=self._jobs,
                )
                opened.append(log)
                log.open(now_ms)
        except StorageError:
            for log in opened:
                log.store.close_quietly()  # the stores only: this may run in a worker thread
            raise
        return opened

    # -- topics: two phases ----------------------------------------------------------------------------------------

    def _refuse_pending(self, name: str) -> None:
        """A create, delete or add_partitions of a name with an operation in progress is refused: as an unknown
        topic if it is being created or deleted, else (it is growing) with the retriable STORAGE_ERROR."""
        doing = self._pending.get(name)
        if doing is None:
            return
        message = f"topic {name!r} is {_PENDING_WORDS[doing]}; retry once that is answered"
        if doing == "add_partitions":
            raise StorageError(message, topic=name)
        raise UnknownTopicOrPartitionError(message, topic=name)

    def begin_create_topic(
        self, name: str, partitions: int, config: dict | None, now_ms: int, *, internal: bool = False
    ) -> PendingTopic:
        """Validate and reserve (no I/O); then ``build()`` the result in a worker thread and pass it (or the
        exception it raised) to ``finish_create_topic``. ``config``: wire keys over the defaults. ``internal``: the
        broker creating one of its own ``__millpond_*`` topics. Raises ``InvalidTopicNameError``,
        ``TopicAlreadyExistsError`` (also while the name is being created or deleted), ``InvalidPartitionsError``
        (1..partitions_max), ``InvalidConfigError``, having reserved nothing."""
        validate_topic_name(name, internal=internal)
        if name in self.topics or name in self._pending:
            doing = self._pending.get(name)
            state = "already exists" if doing is None else f"is {_PENDING_WORDS[doing]}"
            raise TopicAlreadyExistsError(f"topic {name!r} {state}", topic=name)
        if type(partitions) is not int or not 1 <= partitions <= self.partitions_max:
            raise InvalidPartitionsError(
                f"partitions must be an integer from 1 to {self.partitions_max}, got {partitions!r}",
                partitions_max=self.partitions_max,
            )
        topic = Topic(name, TopicConfig.from_wire(config, self.defaults))
        self._pending[name] = "create"
        return PendingTopic(self._storage, topic, partitions, next(self._tickets),
                            lambda t, numbers: self._open_partitions(t, numbers, now_ms))

    def finish_create_topic(self, pending: PendingTopic, result: Topic | BaseException) -> Topic:
        """On the loop: register the built topic, or release the name and raise ``StorageError``."""
        self._pending.pop(pending.name, None)
        topic = self._failed(result, f"cannot create topic {pending.name!r}")
        self.topics[topic.name] = topic
        self._log.info("created topic %s with %d partition(s), config %s", topic.name, len(topic.partitions),
                       topic.config.describe())
        return topic

    def begin_add_partitions(self, name: str, total: int, now_ms: int) -> PendingPartitions:
        """Reserve growing ``name`` to ``total`` partitions (Kafka CreatePartitions): existing partitions keep their
        records; keyed records may map to other partitions from then on. Raises ``UnknownTopicOrPartitionError``,
        ``InvalidPartitionsError`` (not more than now, or over partitions_max), ``StorageError`` (busy)."""
        self._refuse_pending(name)
        topic = self._topic(name)
        current = len(topic.partitions)
        if type(total) is not int or not current < total <= self.partitions_max:
            raise InvalidPartitionsError(
                f"topic {name!r} has {current} partition(s); the new total must be from {current + 1} to "
                f"{self.partitions_max}, got {total!r}",
                partitions=current, partitions_max=self.partitions_max,
            )
        self._pending[name] = "add_partitions"
        return PendingPartitions(self._storage, topic, current, total,
                                 lambda t, numbers: self._open_partitions(t, numbers, now_ms))

    def finish_add_partitions(self, pending: PendingPartitions, result: list[PartitionLog] | BaseException) -> Topic:
        """On the loop: add the built partitions to the topic, or release it and raise ``StorageError``."""
        self._pending.pop(pending.name, None)
        added = self._failed(result, f"cannot add partitions to topic {pending.name!r}")
        pending.topic.partitions.extend(added)
        self._log.info("topic %s grew from %d to %d partitions", pending.name, pending.current, pending.total)
        return pending.topic

    def begin_delete_topic(self, name: str) -> PendingDelete:
        """Remove ``name`` from ``topics`` now (its partitions refuse every call from here on) and reserve the name
        until ``finish_delete_topic``; ``build()`` removes the files. Raises ``UnknownTopicOrPartitionError``,
        ``StorageError`` (busy)."""
        self._refuse_pending(name)
        topic = self._topic(name)
        del self.topics[name]
        for log in topic.partitions:
            log.suspend()
        self._pending[name] = "delete"
        return PendingDelete(self._storage, topic, next(self._tickets))

    def finish_delete_topic(self, pending: PendingDelete, result: None | BaseException) -> None:
        """On the loop: release the name; if the files could not be removed the topic is registered again (as it
        was) and ``StorageError`` raised."""
        self._pending.pop(pending.name, None)
        if isinstance(result, BaseException):
            for log in pending.topic.partitions:
                log.resume()
            self.topics[pending.name] = pending.topic
            self._failed(result, f"cannot delete topic {pending.name!r}")
        self._log.info("deleted topic %s", pending.name)

    def _failed(self, result: Any, what: str) -> Any:
        """``_result``, a storage failure named by ``what`` and logged: the answer alone would leave the operator
        no trace of it."""
        try:
            return self._result(result, what)
        except StorageError as exc:
            if not exc.message.startswith(what):  # e.g. "cannot open big/3: ...": say what it was for
                exc = StorageError(f"{what}: {exc.message}", **exc.details)
            self._log.error("%s", exc.message)
            raise exc from None

    @staticmethod
    def _result(result: Any, what: str) -> Any:
        if isinstance(result, MillpondError):
            raise result
        if isinstance(result, OSError):
            raise StorageError(f"{what}: {result.strerror or result}") from None
        if isinstance(result, BaseException):
            raise result
        return result

    # -- topics: synchronous (startup, tests) ----------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int, config: dict | None, now_ms: int, *,
                     internal: bool = False) -> Topic:
        """Blocking ``begin_create_topic`` + ``build`` + ``finish_create_topic``. Durable before it returns."""
        pending = self.begin_create_topic(name, partitions, config, now_ms, internal=internal)
        return self.finish_create_topic(pending, _run(pending.build))

    def add_partitions(self, name: str, total: int, now_ms: int) -> Topic:
        """Blocking ``begin_add_partitions`` + ``build`` + ``finish_add_partitions``."""
        pending = self.begin_add_partitions(name, total, now_ms)
        return self.finish_add_partitions(pending, _run(pending.build))

    def delete_topic(self, name: str) -> None:
        """Blocking ``begin_delete_topic`` + ``build`` + ``finish_delete_topic``."""
        pending = self.begin_delete_topic(name)
        self.finish_delete_topic(pending, _run(pending.build))

    # -- lookups ---------------------------------------------------------------------------------------------------

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

    # -- durability ------------------------------------------------------------------------------------------------

    def sync_plan(self) -> SyncPlan | None:
        """On the loop: what one grouped sync should cover now, or None if nothing is to do. Under "always" and
        "interval": every partition appended to since it was last durable, with its rolled segments and
        directory; under "never": rolled segments (fsync, then their index files) and directories only. Run it
        (``SyncPlan.run`` in a worker thread) then pass it to ``synced``; one plan in flight at a time is enough,
        overlapping ones are safe."""
        candidates = self._rolled if self.fsync_mode == "never" else self._dirty | self._rolled
        if not candidates:
            return None
        data = self.fsync_mode != "never"
        fs = self._filesystem
        # Decided before the parts are made: with one syncfs, files on its filesystem need no fd of their own
        # (64 partitions: 64 dups on the loop and 64 closes in the thread saved per plan).
        whole = fs is not None and len(candidates) >= fs.min_parts
        covered = fs.device if whole else None
        parts = []
        for log in list(candidates):
            try:
                part = log.sync_part(data, covered)
            except OSError as exc:  # no fd to spare: this partition waits for the next plan
                self._log.error("%s/%s: cannot prepare a sync: %s", log.topic, log.partition, exc)
                continue
            if part is not None:
                parts.append((log, part))
        return SyncPlan(parts, fs, whole) if parts else None

    def synced(self, plan: SyncPlan, error: OSError | None) -> list[PartitionLog]:
        """On the loop, after ``plan.run()`` returned ``error``: mark what became durable (under "always" the high
        watermarks move), or count a failed sync on each partition of the plan (``sync_failures``; nothing becomes
        durable, rolled segments stay for the next plan). Returns the partitions whose high watermark moved or
        whose sync failed."""
        if error is not None:
            self._log.error("fsync failed: %s", error)
            for log, _ in plan.parts:
                log.sync_failures += 1
            return [log for log, _ in plan.parts]
        return [log for log, part in plan.parts if log.synced(part)]

    def dirty(self) -> list[PartitionLog]:
        """Partitions with appends not yet durable (what the next plan's data fsyncs cover); for inspection."""
        return list(self._dirty)

    # -- background work, retention --------------------------------------------------------------------------------

    def take_jobs(self) -> list[Job]:
        """Background work queued since the last call (the next segment's file, removing segments' files): run
        each ``work()`` in a worker thread, then ``done(result)`` on the loop. Order between jobs does not matter."""
        jobs, self._jobs[:] = list(self._jobs), []
        return jobs

    def run_jobs(self) -> None:
        """Blocking: run every queued job here and now (startup, shutdown, tests, the old synchronous API)."""
        while self._jobs:
            for job in self.take_jobs():
                result = _run(job.work)
                if job.done is not None:
                    job.done(result)

    def enforce_retention(self, now_ms: int) -> int:
        """On the loop: apply every topic's retention to each of its partitions; returns the number of segments
        dropped. Reads stop at once; their files are removed by jobs (``take_jobs``)."""
        deleted = 0
        for topic in list(self.topics.values()):
            for log in topic.partitions:
                try:
                    deleted += log.enforce_retention(now_ms)
                except StorageError as exc:  # one full or broken partition must not stop retention elsewhere
                    self._log.error("retention of %s/%s failed: %s", log.topic, log.partition, exc)
        return deleted

    # -- closing ---------------------------------------------------------------------------------------------------

    def abandon(self) -> None:
        """Let go of everything as a killed process would: files closed without syncing or index files, lock
        released, queued jobs dropped. For crash tests and for giving up after a failed start."""
        for topic in self.topics.values():
            for log in topic.partitions:
                log.close_quietly()
        self._jobs.clear()
        self._closed = True
        self._close_filesystem()
        self._storage.close()

    def close(self) -> None:
        """Blocking: run queued jobs, sync every partition, write index files, close everything. Idempotent.
        Raises the first ``StorageError`` after trying every partition. Let taken jobs and plans finish first."""
        if self._closed:
            return
        self._closed = True
        self.run_jobs()
        first: StorageError | None = None
        for topic in self.topics.values():
            for log in topic.partitions:
                try:
                    log.close()
                except StorageError as exc:
                    self._log.error("%s", exc)
                    first = first or exc
        self._close_filesystem()
        self._storage.close()
        if first is not None:
            raise first

    @property
    def sync_in_effect(self) -> str:
        """How sync plans make files durable, in words (the broker logs it at start): "auto" may have fallen back to
        per-file fdatasync where syncfs is not available."""
        if self.storage != "file":
            return "none (memory storage)"
        fs = self._filesystem
        if fs is None:
            return "fdatasync per file" + (" (syncfs not available here)" if self.sync_method == "auto" else "")
        return f"one syncfs for {fs.min_parts} partitions or more, else fdatasync per file"

    def _close_filesystem(self) -> None:
        if self._filesystem is not None:
            self._filesystem.close()
            self._filesystem = None


def _run(work: Any) -> Any:
    """``work()``'s result, or the exception it raised (as a server's worker thread hands it back)."""
    try:
        return work()
    except Exception as exc:
        return exc
