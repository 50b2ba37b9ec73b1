# The file implementation of a PartitionStore: one partition directory of segments (.log + .index/.timeindex, and
# .corrupt for quarantined ranges), its crash recovery (recovery.py tells a torn tail from damage), its reads, and
# the work that keeps blocking calls off the event loop: a roll only renames a
# pre-created spare file; the old segment's fsync, its index files and the directory fsync go in the next sync part;
# removed segments' files go in background jobs. Owns the partition directory's files. Must not know about topics'
# metadata, producers, high watermarks, fsync policy or the wire protocol.
from __future__ import annotations

import errno
import logging
import os
from bisect import bisect_right
from pathlib import Path
from typing import Iterable, Iterator

from millpond.broker.core.log import faults
from millpond.broker.core.log.batch_format import BatchFormat
from millpond.broker.core.log.files import fsync_dir
from millpond.broker.core.log.recovery import load_damage, save_damage, scan
from millpond.broker.core.log.segment import SIDE_SUFFIXES, Segment, write_index_contents
from millpond.broker.core.log.store import Damage, SegmentCorrupt
from millpond.broker.wire.errors import StorageError
from millpond.broker.core.log.topic_config import TopicConfig
from millpond.broker.core.outcomes import Job

_READAHEAD_EXTRA_BYTES = 16 * 1024  # beyond max_bytes + index interval: room to finish the batch holding offset
_ALL = 1 << 62  # read_batches' verify_end for a closed segment: every CRC checked
SPARE_FILE = "spare.log.tmp"  # the next segment's file, made in the background; a leftover .tmp is removed on open


def _segment_files(directory: Path) -> tuple[list[int], list[Path]]:
    """Base offsets of the .log files in ``directory`` (sorted), and leftover files to remove."""
    logs: set[int] = set()
    indexes: dict[int, list[Path]] = {}
    leftovers: list[Path] = []
    for entry in os.scandir(directory):
        stem, _, ext = entry.name.partition(".")
        if len(stem) == 20 and stem.isdigit() and ext in ("log", "index", "timeindex", "corrupt"):
            if ext == "log":
                logs.add(int(stem))
            else:
                indexes.setdefault(int(stem), []).append(Path(entry.path))
        elif entry.name.endswith(".tmp"):
            leftovers.append(Path(entry.path))
    for base, paths in indexes.items():
        if base not in logs:  # a crash between removing a .log and its side files
            leftovers.extend(paths)
    return sorted(logs), leftovers


def _offsets(d: Damage) -> str:
    return f"{d.first}-{d.end - 1}" if d.end > d.first else "none"


def _bytes(d: Damage) -> str:
    return f"bytes {d.position}-{d.position + d.nbytes - 1}" if d.nbytes else f"byte {d.position} (the file ends there)"


def _datasync(fd: int) -> None:
    # fdatasync flushes the data and the file size (what an append changes) and skips the mtime-only inode update
    getattr(os, "fdatasync", os.fsync)(fd)

class FileSyncPart:
    """A partition's share of a sync plan: dup'ed fds of the rolled segments (and of the last one when data is
    asked), the rolled segments whose index files follow their fsync, the directory if a roll changed it."""

    __slots__ = ("end", "fds", "rolled", "directory", "dir_gen", "indexed", "label", "device", "_log")

    def __init__(self, end: int, fds: list[int], rolled: list[Segment], directory: Path | None, dir_gen: int,
                 label: str, device: int, logger: logging.Logger) -> None:
        self.end = end
        self.device = device
        self.fds = fds
        self.rolled = rolled
        self.directory = directory
        self.dir_gen = dir_gen
        self.indexed: list[tuple[Segment, int]] = []  # filled by run: index files written, and for what size
        self.label = label
        self._log = logger

    def run(self, data_synced: bool = False) -> None:
        if not data_synced:
            for fd in self.fds:
                _datasync(fd)
        if faults.armed:
            faults.hit("fsync")
        for seg in self.rolled:  # the .log is durable now, so an index describing it may be written
            try:
                contents = seg.index_contents()
                write_index_contents(seg.stem, contents)
                self.indexed.append((seg, contents[0]))
            except OSError as exc:  # indexes are rebuilt from the log when missing: not worth failing for
                self._log.warning("%s: cannot write index files of %s: %s", self.label, seg.stem, exc)
        if self.directory is not None:
            fsync_dir(self.directory)

    def close(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


class FilePartitionStore:
    """The segments of one partition directory. See ``store.PartitionStore`` for the contract."""

    durable_at_once = False

    def __init__(self, label: str, directory: Path, config: TopicConfig, fmt: BatchFormat, jobs: list[Job],
                 logger: logging.Logger) -> None:
        self.label = label  # "topic/partition", for log lines
        self.directory = directory
        self.config = config
        self.fmt = fmt
        self.segments: list[Segment] = []
        self._bases: list[int] = []  # segments' base offsets, for bisect
        self._unsynced: list[Segment] = []  # rolled, not yet fsynced nor indexed
        self._dir_gen = 0  # bumped by each roll (a new file in the directory) ...
        self._dir_synced = 0  # ... and the generation the last directory fsync covered
        self._jobs = jobs
        self._spare_fd = -1
        self._spare_asked = False
        self._closed = False
        self.device = -1  # st_dev of the directory's filesystem, known once open
        self.retired = False  # set on the loop while the partition's topic is being deleted: attach nothing new
        self._log = logger

    # -- opening and recovery --------------------------------------------------------------------------------------

    def open(self, now_ms: int) -> None:
        """Load the segments and recover. A closed segment is trusted as its index files and its .corrupt record
        describe it if they agree with it (its CRCs are checked on every read); else it is scanned whole, bounded
        by the next segment's base offset, and what the scan rebuilt is written back. The active segment is
        scanned from its recovery point. Only the active segment's tail can be torn: it is cut physically (logged).
        A bad batch anywhere else is damage (see ``recovery.scan``): logged, quarantined in ``<base>.corrupt``,
        its bytes kept and its offsets never given out again. One summary line per partition. Never refuses to
        start over damage. Raises OSError."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.device = os.stat(self.directory).st_dev
        bases, leftovers = _segment_files(self.directory)
        for path in leftovers:
            path.unlink(missing_ok=True)
        interval = self.config.index_interval_bytes
        changed_dir = bool(leftovers)
        scanned = cut = 0
        for k, base in enumerate(bases):
            bound = bases[k + 1] if k + 1 < len(bases) else None
            seg, file_size = Segment.open_existing(self.directory, base, interval, self.fmt)
            self.segments.append(seg)
            known = load_damage(seg.stem)
            indexed = known is not None and seg.load_index_files(file_size)
            if indexed:
                seg.add_damage(known)  # type: ignore[arg-type]
                indexed = seg.index_agrees(bound)
            if not indexed:
                seg.reset()
            elif seg.size == file_size:
                seg.unverified = seg.size
                continue  # cleanly closed: nothing past its recovery point
            start_pos, start_offset = (seg.size, seg.next_offset) if indexed else (0, base)
            seg.unverified = start_pos
            scanned += 1
            found = scan(seg, start_pos, start_offset, file_size, bound, now_ms)
            for d in found:
                self._log.error(
                    "%s: %s.log is damaged at %s (%s): offsets %s quarantined, the bytes kept",
                    self.label, seg.stem, _bytes(d), d.reason, _offsets(d))
            seg.add_damage(found)
            if seg.damage != known:  # new damage, or a record that is unreadable or describes what is gone
                self._save_damage(seg)
            if seg.size < file_size:  # the active segment's torn tail (a closed one's bad tail is damage)
                seg.truncate(seg.size)
                cut += file_size - seg.size
                self._log.warning(
                    "%s: recovery cut %d bytes at position %d of %s.log (torn tail); log end is %d",
                    self.label, file_size - seg.size, seg.size, seg.stem, seg.next_offset,
                )
            else:
                seg.fsync()  # what recovery found becomes durable, so the high watermark may cover it
            if bound is not None:
                try:  # rebuilt: written back, so the next start trusts it instead of scanning again
                    seg.write_index_files()
                except OSError as exc:
                    self._log.warning("%s: cannot write index files of %s: %s", self.label, seg.stem, exc)
        if not self.segments:
            self.segments.append(Segment.create(self.directory, 0, interval, self.fmt))
            changed_dir = True
        if changed_dir:
            fsync_dir(self.directory)
        self._bases = [s.base_offset for s in self.segments]
        damage = [d for s in self.segments for d in s.damage]
        records = sum(s.next_offset - s.base_offset for s in self.segments) - sum(d.end - d.first for d in damage)
        self._log.log(
            logging.WARNING if damage or cut else logging.INFO,
            "%s: recovered %d records in %d segments (%d scanned), log start %d, log end %d; %d torn bytes cut; "
            "%d corrupt ranges quarantined%s", self.label, records, len(self.segments), scanned, self.segments[0].base_offset,
            self.segments[-1].next_offset, cut, len(damage),
            "".join(f"; {_offsets(d)} in {s.base_offset:020d}.log" for s in self.segments for d in s.damage),
        )

    def _save_damage(self, seg: Segment) -> None:
        try:
            save_damage(seg.stem, seg.damage)
        except StorageError as exc:  # the scan finds it again next time: not worth refusing to start for
            self._log.warning("%s: cannot record damaged ranges of %s: %s", self.label, seg.stem, exc)

    def _report_damage(self, seg: Segment) -> None:
        """A read quarantined new damage in ``seg``: log it, and record it in a background job."""
        found, seg.new_damage = seg.new_damage, []
        for d in found:
            self._log.error(
                "%s: %s.log is damaged at %s (%s, found by a read): offsets %s quarantined, the bytes kept",
                self.label, seg.stem, _bytes(d), d.reason, _offsets(d))
        stem, damage, label, log = seg.stem, list(seg.damage), self.label, self._log

        def done(result: object) -> None:
            if isinstance(result, BaseException):
                log.warning("%s: cannot record damaged ranges of %s: %s", label, stem, result)

        self._jobs.append(Job(lambda: save_damage(stem, damage), done))

    def headers(self, since: int | None = None) -> Iterable[tuple]:
        if since is None:
            return self.segments[-1].iter_headers()
        first = max(bisect_right(self._bases, since) - 1, 0)
        return (h for seg in self.segments[first:] for h in seg.iter_headers())

    # -- writing ---------------------------------------------------------------------------------------------------

    def append(self, stamp: bytes, body: memoryview, base: int, end: int, max_ts: int, now_ms: int) -> None:
        seg = self.segments[-1]
        seg.append(stamp, body, base, end, max_ts, now_ms)
        if faults.armed:
            faults.hit("append")
        if self._spare_fd < 0 and not self._spare_asked and not self._closed and not self.retired:
            config = self.config
            if 2 * seg.size >= config.segment_bytes or 2 * (now_ms - (seg.rolling_ms or now_ms)) >= config.segment_ms:
                self._ask_spare()  # half full or half its age: the next roll should find its file made

    def _ask_spare(self) -> None:
        path = self.directory / SPARE_FILE
        self._spare_asked = True

        def work() -> int:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

        def done(result: object) -> None:
            self._spare_asked = False
            if isinstance(result, BaseException):
                self._log.warning("%s: cannot make the next segment's file: %s", self.label, result)
            elif self._closed or self.retired or self._spare_fd >= 0:
                os.close(result)  # type: ignore[arg-type]
            else:
                self._spare_fd = result  # type: ignore[assignment]

        self._jobs.append(Job(work, done))

    def roll(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "the partition is closed")
        old = self.segments[-1]
        base = old.next_offset
        interval = self.config.index_interval_bytes
        new = None
        if self._spare_fd >= 0:
            fd, self._spare_fd = self._spare_fd, -1
            try:
                new = Segment.adopt(self.directory, base, interval, self.fmt, self.directory / SPARE_FILE, fd)
            except OSError as exc:
                os.close(fd)
                self._log.warning("%s: cannot use the spare segment file: %s", self.label, exc)
        if new is None:
            new = Segment.create(self.directory, base, interval, self.fmt)
        if faults.armed:
            faults.hit("roll")
        self.segments.append(new)
        self._bases.append(base)
        self._unsynced.append(old)
        self._dir_gen += 1

    # -- reading ---------------------------------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, upto: int) -> bytes | memoryview:
        i = bisect_right(self._bases, offset) - 1
        segments = self.segments
        readahead = max(max_bytes, 0) + self.config.index_interval_bytes + _READAHEAD_EXTRA_BYTES
        last = len(segments) - 1
        seg = segments[i]
        pieces: list[bytes | memoryview] = []
        try:
            data, at_end = seg.read_batches(offset, max_bytes, upto, True, readahead,
                                            _ALL if i < last else seg.unverified)
            if not at_end or i + 1 >= len(segments) or len(data) >= max_bytes:
                return data
            pieces.append(data)
            total = len(data)
            for k in range(i + 1, last + 1):
                seg = segments[k]
                if seg.base_offset >= upto:
                    break
                more, at_end = seg.read_batches(seg.base_offset, max_bytes - total, upto, False, max_bytes - total,
                                                _ALL if k < last else seg.unverified)
                pieces.append(more)
                total += len(more)
                if not at_end:
                    break
            return b"".join(pieces)
        except SegmentCorrupt as exc:
            if seg.new_damage:
                self._report_damage(seg)
            if pieces:
                exc.data = b"".join([*pieces, exc.data])
            raise

    def batches_from_time(self, timestamp_ms: int) -> Iterator[bytes]:
        for seg in self.segments:
            if seg.max_timestamp >= timestamp_ms:
                try:
                    yield from seg.batches_from_time(timestamp_ms)
                finally:
                    if seg.new_damage:
                        self._report_damage(seg)

    # -- retention -------------------------------------------------------------------------------------------------

    def drop_oldest(self, count: int) -> None:
        doomed = self.segments[:count]
        del self.segments[:count]
        del self._bases[:count]
        gone = {id(s) for s in doomed}
        self._unsynced = [s for s in self._unsynced if id(s) not in gone]
        fds = []
        for seg in doomed:  # the job owns these fds now: the loop never touches the numbers again
            fds.append(seg.fd)
            seg.fd = -1
        stems = [seg.stem for seg in doomed]
        directory, label, log = self.directory, self.label, self._log

        def work() -> None:
            try:
                # A segment rolled for retention must exist durably before the old ones go (the log end never
                # moves back); then oldest first, one durable unlink at a time, so a crash never leaves a gap.
                fsync_dir(directory)
                for stem in stems:
                    os.unlink(stem.with_suffix(".log"))
                    fsync_dir(directory)
                    for suffix in SIDE_SUFFIXES:
                        stem.with_suffix(suffix).unlink(missing_ok=True)
            finally:
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass

        def done(result: object) -> None:
            if isinstance(result, BaseException):
                log.warning("%s: cannot remove segments deleted by retention: %s", label, result)

        self._jobs.append(Job(work, done))

    # -- durability ------------------------------------------------------------------------------------------------

    def sync_part(self, data: bool, covered: int | None = None) -> FileSyncPart | None:
        if self._closed:
            return None
        rolled = list(self._unsynced)
        dir_needed = self._dir_gen > self._dir_synced
        active = self.segments[-1]
        if not rolled and not dir_needed and not data:
            return None
        fds: list[int] = []
        # a syncfs of our filesystem makes the segments durable: no fd to fsync (a roll's index files and the
        # directory still go by path)
        synced_whole = covered is not None and covered == self.device
        try:
            for seg in () if synced_whole else rolled + [active] if data else rolled:
                fds.append(os.dup(seg.fd))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        end = active.next_offset if data else active.base_offset
        return FileSyncPart(end, fds, rolled, self.directory if dir_needed else None, self._dir_gen, self.label,
                            self.device, self._log)

    def synced(self, part: FileSyncPart) -> bool:  # type: ignore[override]
        for seg, size in part.indexed:
            seg.indexed_bytes = size
        if part.rolled:
            done = {id(s) for s in part.rolled}
            self._unsynced = [s for s in self._unsynced if id(s) not in done]
        if part.directory is not None and part.dir_gen > self._dir_synced:
            self._dir_synced = part.dir_gen
        return not self._unsynced and self._dir_gen == self._dir_synced

    def flush(self) -> None:
        part = self.sync_part(True)
        if part is None:
            return
        try:
            part.run()
        finally:
            part.close()
        self.synced(part)

    # -- closing ---------------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed or not self.segments:
            return
        error: OSError | None = None
        try:
            self.flush()
            active = self.segments[-1]
            try:
                active.write_index_files()
            except OSError as exc:  # indexes are rebuilt from the log when missing: not worth failing for
                self._log.warning("%s: cannot write index files of %s: %s", self.label, active.stem, exc)
        except OSError as exc:
            error = exc
        had_spare = self._spare_fd >= 0
        self.close_quietly()
        if had_spare:
            (self.directory / SPARE_FILE).unlink(missing_ok=True)  # else removed as a leftover on the next open
        if error is not None:
            raise error

    def close_quietly(self) -> None:
        self._closed = True
        for seg in self.segments:
            try:
                seg.close()
            except OSError:
                pass
        if self._spare_fd >= 0:
            fd, self._spare_fd = self._spare_fd, -1
            try:
                os.close(fd)
            except OSError:
                pass


__all__ = ["FilePartitionStore", "FileSyncPart", "SPARE_FILE", "SegmentCorrupt"]
