# The crash harness: the broker as a subprocess (fsync "always") under load from the millpond client (an idempotent
# producer, a non-idempotent one, two members of a consumer group committing what they read), killed with SIGKILL
# at random moments and at the storage's fault points (broker/core/log/faults.py), restarted on the same port, and
# checked after each start: every acknowledged record at its acknowledged offset (once, for the idempotent
# producer), every committed offset at least the last acknowledged commit, every batch served decodes with its CRC,
# and the next produce gets an offset past every acknowledged one. Used by tests/daemon/test_crash_harness.py
# (a bounded run) and as `python -m millpond.bench.crash --kills 500` (a long run, figures on stdout).
from __future__ import annotations

import argparse
import collections
import itertools
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from millpond.broker.wire.batch import decode_records, encode_batch
from millpond.broker.wire.errors import CorruptBatchError, CorruptRangeError, MillpondError
from millpond.broker.wire.frames import FrameDecoder, decode_response, encode_request
from millpond.client import sync

TOPICS = {"idem": 2, "plain": 2}  # topic -> partitions; "idem" gets the idempotent producer's records
SEGMENT_BYTES = 16 * 1024  # small segments: rolls, index writes and producer snapshots happen every second
GROUP = "crash-group"
START_TIMEOUT_S = 30
# fault point -> the range its pass count is drawn from (appends and fsyncs are many a second, rolls a few)
FAULTS = {"append": (1, 400), "fsync": (1, 150), "roll": (1, 4), "index": (1, 4), "snapshot": (1, 3)}
WINDOW, PAUSE_S = 100, 0.02  # each producer: records sent before awaiting their acknowledgements, then a pause
TAIL_RECORDS = 5000  # a tail check reads each partition from this far below the previous check's high watermark
FAULT_WAIT_S = 5.0  # a fault point not reached by then: the broker is killed there and then (a random kill)
STALL_KILLS = 6  # a producer with no record acknowledged over this many kills in a row is stalled (a failure)


@dataclass
class Figures:
    kills: int = 0
    random_kills: int = 0
    fault_kills: collections.Counter = field(default_factory=collections.Counter)
    faults_not_reached: int = 0
    recovery_kills: int = 0  # of the fault point kills, those during a start (recovery), before it listened
    checks: int = 0
    records_acknowledged: int = 0
    records_checked: int = 0
    commits_acknowledged: int = 0
    commits_checked: int = 0
    lost: int = 0
    duplicated: int = 0
    corrupt_reads: int = 0
    offsets_reused: int = 0
    commits_lost: int = 0
    plain_resent: int = 0  # non-idempotent records stored twice after a lost answer: allowed, counted
    client_errors: int = 0
    stalls: int = 0  # a producer that had nothing acknowledged for STALL_KILLS kills in a row
    problems: list[str] = field(default_factory=list)
    full_checks: int = 0
    high_watermarks: dict[tuple[str, int], int] = field(default_factory=dict)  # as the last check saw them

    def failures(self) -> int:
        return (self.lost + self.duplicated + self.corrupt_reads + self.offsets_reused + self.commits_lost
                + self.stalls)

    def summary(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.fault_kills.items())) or "none"
        return (f"kills {self.kills} (random {self.random_kills}; at fault points: {faults}; fault point not reached "
                f"in time, killed there and then: {self.faults_not_reached}; during recovery, before listening: "
                f"{self.recovery_kills}); checks {self.checks} "
                f"({self.full_checks} of every record); records "
                f"acknowledged {self.records_acknowledged}, record checks {self.records_checked}; commits "
                f"acknowledged {self.commits_acknowledged}, commit checks {self.commits_checked}; lost {self.lost}, "
                f"duplicated {self.duplicated}, corrupt reads {self.corrupt_reads}, offsets reused "
                f"{self.offsets_reused}, commits lost {self.commits_lost}, producers stalled {self.stalls}; non-idempotent records stored twice "
                f"after a lost answer (allowed) {self.plain_resent}; client errors survived {self.client_errors}")


class RawClient:
    """A blocking client of the native protocol, for the checks (nothing of the client package in between)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.decoder = FrameDecoder(1 << 30)
        self.ids = itertools.count(1)
        self.pending: list[bytes] = []
        try:
            self.ok("hello", {"protocol_version": 1, "client_id": "crash-check"})
        except BaseException:
            self.sock.close()
            raise

    def call(self, api: str, body: dict[str, Any]) -> tuple[int, Any]:
        cid = next(self.ids)
        self.sock.sendall(encode_request(cid, api, body))
        while not self.pending:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("broker closed the connection")
            self.pending.extend(self.decoder.feed(data))
        rcid, code, answer = decode_response(self.pending.pop(0))
        assert rcid == cid
        return code, answer

    def ok(self, api: str, body: dict[str, Any]) -> Any:
        code, answer = self.call(api, body)
        if code:
            raise MillpondError(f"{api}: code {code}: {answer}")
        return answer

    def close(self) -> None:
        self.sock.close()


class Broker:
    """The broker process on one data directory and, after the first start, always the same port."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.data_dir = data_dir
        self.log = log
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self, fault: str | None = None) -> bool:
        """Start the broker (armed with ``fault``, ``POINT:N``); False if it killed itself at that point before
        it listened (recovery writes index files and snapshots too)."""
        env = dict(os.environ)
        env.pop("MILLPOND_CRASH_AT", None)
        if fault is not None:
            env["MILLPOND_CRASH_AT"] = fault
        args = [sys.executable, "-m", "millpond.broker.cli", "serve", "--data-dir", str(self.data_dir), "--port",
                str(self.port), "--fsync", "always", "--log-level", "WARNING"]
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with open(self.log, "a") as err:
                err.write(f"--- start {fault or 'no fault point'}\n")
                err.flush()
                proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
            assert proc.stdout is not None
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                ready = sel.select(max(deadline - time.monotonic(), 0.1))
            line = proc.stdout.readline() if ready else ""
            if line.startswith("millpond listening on "):
                self.proc = proc
                self.port = int(line.rsplit(":", 1)[1])
                return True
            if ready and not line:  # it ended before listening
                rc = proc.wait()
                proc.stdout.close()
                if fault is not None and rc == -signal.SIGKILL:
                    return False
            else:
                proc.kill()
                proc.wait()
                proc.stdout.close()
            if time.monotonic() > deadline:  # e.g. the port still held: tried again until the deadline
                raise RuntimeError(f"the broker did not start: {line!r}; see {self.log}")
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def wait_for_fault(self, timeout_s: float) -> bool:
        """True if the process ended by itself (its fault point) within ``timeout_s``, with SIGKILL."""
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        if rc != -signal.SIGKILL:
            raise RuntimeError(f"the broker ended with {rc}, not by its fault point; see {self.log}")
        return True


class Ledger:
    """What the broker acknowledged, shared by the load threads and the checks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[tuple[str, int, int], bytes] = {}  # (topic, partition, offset) -> value
        self.commits: dict[tuple[str, int], int] = {}  # (topic, partition) -> highest acknowledged commit
        self.commit_acks = 0
        self.acks: collections.Counter = collections.Counter()  # topic -> records acknowledged
        self.errors = 0
        self.corrupt = 0  # wrong or damaged records served to the group members
        self.problems: list[str] = []

    def snapshot(self) -> tuple[dict, dict]:
        with self.lock:
            return dict(self.records), dict(self.commits)


def _connect(port: int, name: str) -> sync.SyncClient:
    return sync.connect(("127.0.0.1", port), client_id=name, reconnect_backoff_s=(0.02, 0.2),
                        reconnect_timeout_s=60.0, request_timeout_s=20.0)


def producer_load(port: int, ledger: Ledger, stop: threading.Event, topic: str, idempotent: bool) -> None:
    """Send numbered records in windows of ``WINDOW`` and note each acknowledged one; failed records are only
    counted."""
    seq = itertools.count()
    prefix = b"i" if idempotent else b"p"
    while not stop.is_set():
        try:
            with _connect(port, f"crash-{topic}") as c, c.producer(idempotent=idempotent, linger_s=0.002,
                                                                  batch_bytes=4096, delivery_timeout_s=60.0) as p:
                while not stop.is_set():
                    sent = [(v, p.send(topic, v)) for v in (prefix + b"%09d" % next(seq) for _ in range(WINDOW))]
                    for value, handle in sent:
                        try:
                            meta = handle.result(90)
                        except Exception:
                            with ledger.lock:
                                ledger.errors += 1
                            continue
                        with ledger.lock:
                            ledger.records[(topic, meta.partition, meta.offset)] = value
                            ledger.acks[topic] += 1
                    stop.wait(PAUSE_S)  # paced: a long run's ledger stays in memory and its checks stay short
        except Exception:
            with ledger.lock:
                ledger.errors += 1
            stop.wait(0.1)


def member_load(port: int, ledger: Ledger, stop: threading.Event, name: str) -> None:
    """A consumer group member: read (a record at an acknowledged offset must hold the acknowledged value; a
    damaged batch or range served is a corrupt read), commit what was read (explicit offsets), note each
    acknowledged commit."""
    while not stop.is_set():
        try:
            with _connect(port, name) as c, c.consumer(list(TOPICS), group=GROUP, auto_offset_reset="earliest",
                                                       enable_auto_commit=False, session_timeout_s=6.0,
                                                       max_wait_s=0.2) as cons:
                while not stop.is_set():
                    records = cons.getmany(max_records=500, timeout_s=0.3)
                    offsets: dict[tuple[str, int], int] = {}
                    with ledger.lock:
                        for r in records:
                            offsets[(r.topic, r.partition)] = r.offset + 1
                            want = ledger.records.get((r.topic, r.partition, r.offset))
                            if want is not None and want != r.value:
                                ledger.corrupt += 1
                                ledger.problems.append(f"{name} read {r.value!r} at {r.topic}/{r.partition} offset "
                                                       f"{r.offset}, acknowledged {want!r}")
                    if not offsets:
                        continue
                    cons.commit(offsets)
                    with ledger.lock:
                        ledger.commit_acks += len(offsets)
                        for tp, o in offsets.items():
                            if o > ledger.commits.get(tp, -1):
                                ledger.commits[tp] = o
        except (CorruptRangeError, CorruptBatchError) as exc:
            with ledger.lock:
                ledger.corrupt += 1
                ledger.problems.append(f"{name}: {exc}")
            stop.wait(0.1)
        except Exception:  # the broker went away mid-call, a rebalance refused a commit: join again
            with ledger.lock:
                ledger.errors += 1
            stop.wait(0.1)


def read_partition(client: RawClient, topic: str, partition: int, start: int = 0
                   ) -> tuple[dict[int, bytes], int, bool]:
    """Every record of a partition from ``start`` up to its high watermark: ``(offset -> value, high watermark,
    corrupt?)``; a batch that fails its CRC or does not decode, or a CORRUPT_RANGE answer, is a corrupt read."""
    out: dict[int, bytes] = {}
    offset = start
    hw = None
    while hw is None or offset < hw:
        answer = client.ok("fetch", {"partitions": [[topic, partition, offset]], "max_bytes": 1 << 20,
                                     "max_wait_ms": 0})
        [[_, _, code, _, hw, data, *_]] = answer["partitions"]
        if code:
            return out, hw, True
        try:
            records = decode_records(data, topic, partition, min_offset=offset)
        except MillpondError:
            return out, hw, True
        if not records:
            if offset < hw:
                return out, hw, True  # below the high watermark and nothing served: the range is unreadable
            break
        for r in records:
            if r.offset != offset:
                return out, hw, True  # offsets are dense: a gap is damage the broker did not report
            out[r.offset] = r.value
            offset += 1
    return out, hw, False


def check(port: int, ledger: Ledger, figures: Figures, tail: dict[tuple[str, int], int] | None = None) -> None:
    """One check of everything acknowledged so far (see the module comment), or with ``tail`` (partition ->
    offset) only of the records from there on. Raises ConnectionError (or OSError) if the broker dies meanwhile (a
    fault point reached by the check's own produce): nothing is counted then, and the next check covers it.
    Leaves each partition's high watermark in ``figures.high_watermarks``."""
    acked, commits = ledger.snapshot()
    hws: dict[tuple[str, int], int] = {}
    checked = 0
    found: list[str] = []
    lost = duplicated = corrupt = reused = commits_lost = resent = 0
    markers: dict[tuple[str, int, int], bytes] = {}
    client = RawClient(port)
    try:
        for topic, partitions in TOPICS.items():
            for p in range(partitions):
                start = 0 if tail is None else max(tail.get((topic, p), 0) - TAIL_RECORDS, 0)
                stored, hw, bad = read_partition(client, topic, p, start)
                hws[(topic, p)] = hw
                if bad:
                    corrupt += 1
                    found.append(f"{topic}/{p}: corrupt read below the high watermark {hw}")
                mine = {o: v for (t, q, o), v in acked.items() if t == topic and q == p}
                last = max(mine, default=-1)
                mine = {o: v for o, v in mine.items() if o >= start}
                checked += len(mine)
                for o, v in mine.items():
                    if stored.get(o) != v:
                        lost += 1
                        if len(found) < 20:
                            found.append(f"{topic}/{p} offset {o}: acknowledged {v!r}, stored {stored.get(o)!r}")
                counts = collections.Counter(v for v in stored.values() if v[:1] in (b"i", b"p"))
                twice = sum(n - 1 for n in counts.values() if n > 1)
                if topic == "idem":
                    duplicated += twice
                    if twice:
                        found.append(f"{topic}/{p}: {twice} idempotent records stored more than once")
                else:
                    resent += twice
                # the next produce gets an offset past every acknowledged one
                value = b"m%d-%d" % (figures.checks, p)
                base = client.ok("produce", {"topic": topic, "partition": p,
                                             "batch": encode_batch([(int(time.time() * 1000), None, value, None)])})[
                    "base_offset"]
                if base <= last:
                    reused += 1
                    found.append(f"{topic}/{p}: next produce got offset {base}, acknowledged up to {last}")
                markers[(topic, p, base)] = value
        code, answer = client.call("describe_group", {"group": GROUP})  # unknown before the first commit
        committed = {} if code else {(o["topic"], o["partition"]): o["committed_offset"] for o in answer["offsets"]}
        for tp, o in commits.items():
            if committed.get(tp, -1) < o:
                commits_lost += 1
                found.append(f"{tp}: committed {committed.get(tp, -1)}, last acknowledged commit {o}")
    finally:
        client.close()
    with ledger.lock:
        ledger.records.update(markers)
    figures.checks += 1
    figures.records_checked += checked
    figures.high_watermarks = hws
    figures.commits_checked += len(commits)
    figures.lost += lost
    figures.duplicated += duplicated
    figures.corrupt_reads += corrupt
    figures.offsets_reused += reused
    figures.commits_lost += commits_lost
    figures.plain_resent = max(figures.plain_resent, resent)
    figures.problems.extend(found)


def _check_quietly(port: int, ledger: Ledger, figures: Figures, full: bool) -> None:
    try:
        check(port, ledger, figures, None if full else figures.high_watermarks)
        figures.full_checks += full
    except (OSError, ConnectionError, MillpondError):
        pass  # the broker died under the check (its fault point): the next check covers what this one would


def run(kills: int, data_dir: Path, *, seed: int = 1, fault_share: float = 0.5,
        round_s: tuple[float, float] = (0.3, 1.2),
        time_budget_s: float | None = None, full_every: int = 1, every_point_first: bool = False,
        progress: Any = None) -> Figures:
    """Kill the broker ``kills`` times (or until ``time_budget_s`` passes), checking after every start (every
    record after each ``full_every``-th kill, else each partition's tail since the previous check); a final start
    without a fault point checks every record once more and stops the broker cleanly. ``every_point_first``: the
    first starts are armed with each fault point in turn."""
    rng = random.Random(seed)
    figures = Figures()
    ledger = Ledger()
    broker = Broker(data_dir / "data", data_dir / "broker.log")
    broker.start()
    setup = RawClient(broker.port)
    for topic, partitions in TOPICS.items():
        setup.ok("create_topic", {"name": topic, "partitions": partitions, "config": {"segment_bytes": SEGMENT_BYTES}})
    setup.close()
    stop = threading.Event()
    threads = [threading.Thread(target=producer_load, args=(broker.port, ledger, stop, "idem", True), daemon=True),
               threading.Thread(target=producer_load, args=(broker.port, ledger, stop, "plain", False), daemon=True)]
    threads += [threading.Thread(target=member_load, args=(broker.port, ledger, stop, f"member-{i}"), daemon=True)
                for i in range(2)]
    for t in threads:
        t.start()
    started = time.monotonic()
    points = itertools.cycle(FAULTS)
    armed: str | None = None  # the fault point the running broker was started with
    seen, idle = collections.Counter(), collections.Counter()  # per topic: acks at the last kill, kills without one
    try:
        while figures.kills < kills and (time_budget_s is None or time.monotonic() - started < time_budget_s):
            if armed is not None:
                if broker.wait_for_fault(FAULT_WAIT_S):
                    figures.fault_kills[armed.partition(":")[0]] += 1
                else:
                    figures.faults_not_reached += 1
            else:
                time.sleep(rng.uniform(*round_s))
                figures.random_kills += 1
            broker.kill()
            figures.kills += 1
            armed = None
            if figures.kills <= len(FAULTS) * every_point_first or rng.random() < fault_share:
                point = next(points)
                armed = f"{point}:{rng.randint(*FAULTS[point])}"
            while not broker.start(armed):  # killed at its fault point while recovering: started again, unarmed
                figures.kills += 1
                figures.recovery_kills += 1
                figures.fault_kills[armed.partition(":")[0]] += 1
                armed = None
            _check_quietly(broker.port, ledger, figures, figures.kills % full_every == 0)
            with ledger.lock:
                for topic in TOPICS:
                    n = ledger.acks[topic]
                    idle[topic] = 0 if n > seen[topic] else idle[topic] + 1
                    seen[topic] = n
                    if idle[topic] == STALL_KILLS:
                        figures.stalls += 1
                        figures.problems.append(f"the {topic} producer had nothing acknowledged over {STALL_KILLS} "
                                                f"kills (kill {figures.kills})")
                figures.records_acknowledged = len(ledger.records)
                figures.commits_acknowledged = ledger.commit_acks
                figures.client_errors = ledger.errors
            if progress is not None:
                progress(figures)
        if broker.proc is not None and broker.proc.poll() is None:
            broker.kill()
        broker.start()
        time.sleep(0.5)  # the load finds the last start too
        stop.set()
        for t in threads:
            t.join(30)
        check(broker.port, ledger, figures)
        figures.full_checks += 1
    finally:
        stop.set()
        if broker.proc is not None and broker.proc.poll() is None:
            broker.proc.terminate()
            try:
                broker.proc.wait(10)
            except subprocess.TimeoutExpired:
                broker.proc.kill()
                broker.proc.wait()
            if broker.proc.stdout is not None:
                broker.proc.stdout.close()
    figures.records_acknowledged = len(ledger.records)
    figures.commits_acknowledged = ledger.commit_acks
    figures.client_errors = ledger.errors
    figures.corrupt_reads += ledger.corrupt
    figures.problems.extend(ledger.problems)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m millpond.bench.crash", description=__doc__)
    parser.add_argument("--kills", type=int, default=500, help="SIGKILLs to deliver (default 500)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-share", type=float, default=0.5,
                        help="share of starts armed with a fault point (default 0.5); the rest are killed at random")
    parser.add_argument("--full-every", type=int, default=20,
                        help="check every record after each Nth kill, else the tails (default 20; always at the end)")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this long even if kills remain")
    parser.add_argument("--data-dir", help="where the broker's data and log go (default: a temporary directory, "
                                           "removed after a run with no failures)")
    args = parser.parse_args(argv)
    work = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="millpond-crash-"))
    work.mkdir(parents=True, exist_ok=True)

    def progress(f: Figures) -> None:
        if f.kills % 10 == 0:
            print(f"[{time.strftime('%H:%M:%S')}] {f.summary()}", flush=True)

    figures = run(args.kills, work, seed=args.seed, fault_share=args.fault_share,
                  time_budget_s=None if args.minutes is None else args.minutes * 60, full_every=args.full_every,
                  progress=progress)
    print(figures.summary())
    for problem in figures.problems[:50]:
        print("  ", problem)
    if figures.failures():
        print(f"FAILED: data and broker log kept in {work}")
        return 1
    if not args.data_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
