# The blocking halves of the log's two-phase work, handed to the server: a sync plan (fsyncs gathered on the loop,
# run in a worker thread) and the file work of topic creation, growth and deletion (the manager has already
# validated and reserved the name on the loop; ``build`` runs in a worker thread; the manager's ``finish_*``
# applies the result on the loop). Nothing here touches the manager's shared state. Must not know about trio or
# how the server schedules threads.
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from millpond.broker.core.log.store import Storage, SyncPart
from millpond.broker.wire.errors import StorageError

if TYPE_CHECKING:
    from millpond.broker.core.log.files import FilesystemSync
    from millpond.broker.core.log.manager import Topic
    from millpond.broker.core.log.partition import PartitionLog


class SyncPlan:
    """What one grouped sync covers: each partition's ``SyncPart`` (dup'ed fds of rolled segments and, unless
    fsync is "never", of the active one; rolled segments' index files; directory fsyncs) and the end offset it
    reaches (``ends``). ``run`` in a worker thread, then ``LogManager.synced(plan, error)`` on the loop.

    With ``filesystem`` (``files.FilesystemSync``) and ``whole`` (``LogManager.sync_plan`` decides: at least its
    ``min_parts`` partitions), one syncfs makes every part on that filesystem durable at once
    (``whole_filesystem``), and the parts only write their index files and fsync their directories (a part
    elsewhere still fsyncs its own files). Parts made for such a plan hold no fds for files on that filesystem
    (``sync_part``'s ``covered``): the plan stays whole whatever the number of parts it ends up with."""

    __slots__ = ("parts", "filesystem", "whole_filesystem")

    def __init__(self, parts: list[tuple["PartitionLog", SyncPart]],
                 filesystem: "FilesystemSync | None" = None, whole: bool = False) -> None:
        self.parts = parts
        self.filesystem = filesystem
        self.whole_filesystem = filesystem is not None and whole

    @property
    def ends(self) -> dict["PartitionLog", int]:
        """The offset below which each partition is durable once the plan ran without error."""
        return {plog: part.end for plog, part in self.parts}

    def run(self) -> OSError | None:
        """Blocking: fsync everything in the plan; returns the first OSError (the rest is not attempted) or None.
        Closes the plan's fds either way. Touches no shared state."""
        try:
            fs = self.filesystem
            if self.whole_filesystem:
                fs.sync()  # type: ignore[union-attr]
                for _, part in self.parts:
                    part.run(data_synced=part.device == fs.device)  # type: ignore[union-attr]
            else:
                for _, part in self.parts:
                    part.run()
        except OSError as exc:
            return exc
        finally:
            self.close()
        return None

    def split(self, pieces: int) -> list["SyncPlan"]:
        """The plan cut into at most ``pieces`` plans of whole partitions (round robin), to ``run`` in as many
        threads at once: the filesystem commits concurrent fsyncs of many files together (ext4 here: a plan over 64
        partitions took 15.6 ms in one thread, 5.5 ms split over 8; ``python -m millpond.bench.sync_plan``). Each
        piece owns its parts' fds; ``synced`` still takes the whole plan. A plan that syncs the whole filesystem
        is not split (one syncfs does it all)."""
        n = 1 if self.whole_filesystem else max(1, min(pieces, len(self.parts)))
        return [SyncPlan(self.parts[i::n]) for i in range(n)] if n > 1 else [self]

    def close(self) -> None:
        """Release the fds without running (a plan the server will not run). Idempotent."""
        for _, part in self.parts:
            part.close()


class PendingTopic:
    """A topic creation reserved on the loop; ``build`` stores and opens it (blocking), returning the ``Topic``
    for ``LogManager.finish_create_topic``. ``blocking``: False when the storage does no I/O (memory)."""

    def __init__(self, storage: Storage, topic: "Topic", partitions: int, ticket: int,
                 open_partitions: Callable[["Topic", range], list["PartitionLog"]]) -> None:
        self.name = topic.name
        self.topic = topic
        self.partitions = partitions
        self.blocking = storage.needs_thread
        self._storage = storage
        self._ticket = ticket
        self._open = open_partitions

    def build(self) -> "Topic":
        """Blocking: directories, files, metadata, rename, fsync, then opening the partitions, then marking the
        creation final. Raises ``StorageError`` or ``OSError``; a creation that fails after the rename (e.g. the
        partitions' files do not fit the open-file limit) is removed again, so nothing is left on disk but what
        the next start removes."""
        self._storage.create_topic(self.name, self.partitions, self.topic.config, self._ticket)
        try:
            self.topic.partitions.extend(self._open(self.topic, range(self.partitions)))
            self._storage.created(self.name)
        except BaseException:
            for log in self.topic.partitions:
                log.store.close_quietly()
            self.topic.partitions.clear()
            try:
                self._storage.remove_topic(self.name, self._ticket)()
            except (OSError, StorageError):
                pass  # still marked as creating: the next start removes it
            raise
        return self.topic


class PendingPartitions:
    """Partitions ``current..total-1`` of ``topic``, reserved on the loop; ``build`` stores and opens them
    (blocking), returning them for ``LogManager.finish_add_partitions``."""

    def __init__(self, storage: Storage, topic: "Topic", current: int, total: int,
                 open_partitions: Callable[["Topic", range], list["PartitionLog"]]) -> None:
        self.name = topic.name
        self.topic = topic
        self.current = current
        self.total = total
        self.blocking = storage.needs_thread
        self._storage = storage
        self._open = open_partitions

    def build(self) -> list["PartitionLog"]:
        """Blocking: new partition directories, then the metadata, then opening them. Raises ``StorageError`` or
        ``OSError``; if they cannot be opened the count goes back and they are removed."""
        self._storage.add_partitions(self.name, self.current, self.total, self.topic.config)
        try:
            return self._open(self.topic, range(self.current, self.total))
        except BaseException:
            try:
                self._storage.remove_partitions(self.name, self.current, self.total, self.topic.config)
            except (OSError, StorageError):
                pass  # counted but empty: the next start opens them
            raise


class PendingDelete:
    """A topic already gone from ``LogManager.topics`` (its partitions suspended); ``build`` removes its files
    (blocking) for ``LogManager.finish_delete_topic``."""

    def __init__(self, storage: Storage, topic: "Topic", ticket: int) -> None:
        self.name = topic.name
        self.topic = topic
        self.blocking = storage.needs_thread
        self._storage = storage
        self._ticket = ticket

    def build(self) -> None:
        """Blocking: make the removal durable (a rename to the trash), close the partitions' files, remove them.
        Raises ``StorageError`` only before anything changed (then the topic is registered again)."""
        rest = self._storage.remove_topic(self.name, self._ticket)
        for log in self.topic.partitions:
            log.release()
        rest()


__all__ = ["PendingDelete", "PendingPartitions", "PendingTopic", "SyncPlan"]
