# The request loop alone, over a scripted engine and codec (no cores, no sockets, virtual time): waiting, waking,
# deadlines, offloaded work, the timer following the engine's deadline, answers held back from a connection with
# no room, and waiters abandoned when their connection goes. Also: the server spells no API name.
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import trio

from millpond.broker.core.outcomes import Answer, Context, Job, Offload, Wait
from millpond.broker.server.frontends.native import REQUESTS
from millpond.broker.server.loop import RequestLoop
from millpond.broker.wire.errors import InvalidRequestError, MillpondError


class Session:
    client_id = "c"
    handshaken = True
    answer_bytes_max = 1 << 20


class Codec:
    """Frames are ``b"cid:name"``; answers are ``[b"cid=value"]``, errors ``[b"cid!NAME"]``."""

    def new_session(self):
        return Session()

    def decode(self, session, body: bytes):
        cid, _, name = body.decode().partition(":")
        if not name:
            raise InvalidRequestError("no name", correlation_id=int(cid))
        return int(cid), name

    def encode(self, cid, value):
        return [f"{cid}={value}".encode()]

    def encode_error(self, cid, exc: MillpondError):
        return [f"{cid}!{exc.name}".encode()]


class Engine:
    def __init__(self, script):
        self.script = script  # name -> callable(ctx) -> Outcome
        self.woken: set = set()
        self.jobs: list = []
        self.deadline = math.inf
        self.ticks: list[float] = []
        self.seen: list[Context] = []

    def handle(self, request, ctx):
        self.seen.append(ctx)
        return self.script[request](ctx)

    def take_woken(self):
        woken, self.woken = self.woken, set()
        return woken

    def take_jobs(self):
        jobs, self.jobs = self.jobs, []
        return jobs

    def next_deadline(self):
        return self.deadline

    def tick(self, ctx):
        self.ticks.append(ctx.now)
        self.deadline = math.inf
        return {"ticked"}

    def sync_plan(self):
        return None

    def write_held(self):
        return True


def feed(loop, conn, *bodies) -> None:
    """One read's worth of frames, as the connection hands them over: each frame, then the end of the pass."""
    for body in bodies:
        loop.on_frame(conn, body)
    loop.on_frames_done(conn)


class Conn:
    def __init__(self):
        self.sent: list[bytes] = []
        self.closed = False
        self.session = None
        self.handshaken = False
        self.answer_bytes_max = 0
        self.host = "127.0.0.1"
        self.peer = "127.0.0.1:1"
        self.room = True
        self.later: list = []
        self.held_bytes = 0

    def hold(self, n):
        self.held_bytes += n

    def release(self, n):
        self.held_bytes -= n

    def send(self, pieces):
        self.sent.append(b"".join(pieces))

    def when_room(self, callback):
        if self.room:
            callback()
        else:
            self.later.append(callback)

    def make_room(self):
        self.room = True
        later, self.later = self.later, []
        for callback in later:
            callback()


@pytest.fixture
async def make(nursery):
    async def make(script):
        engine = Engine(script)
        loop = RequestLoop(engine, Codec(), fsync="never", fsync_interval_s=1.0)
        await nursery.start(loop.run)
        return loop, engine

    return make


async def test_an_answer_goes_out_at_once_with_the_callers_context(make):
    loop, engine = await make({"a": lambda ctx: Answer("A")})
    conn = Conn()
    feed(loop, conn, b"1:a")
    assert conn.sent == [b"1=A"]
    assert engine.seen[0].client_id == "c" and engine.seen[0].host == "127.0.0.1" and conn.handshaken


async def test_a_bad_frame_gets_an_error_with_its_correlation_id_and_the_loop_goes_on(make):
    loop, _ = await make({"a": lambda ctx: Answer("A")})
    conn = Conn()
    feed(loop, conn, b"4:")
    feed(loop, conn, b"5:a")
    assert conn.sent == [b"4!INVALID_REQUEST", b"5=A"]


async def test_an_engine_bug_is_answered_unknown_and_the_loop_goes_on(make):
    loop, _ = await make({"boom": lambda ctx: 1 / 0, "a": lambda ctx: Answer("A")})
    conn = Conn()
    feed(loop, conn, b"1:boom")
    feed(loop, conn, b"2:a")
    assert conn.sent == [b"1!UNKNOWN", b"2=A"]


async def test_a_waiter_resumes_when_its_key_is_woken(make, autojump_clock):
    calls = []

    def resume(ctx, timed_out):
        calls.append((ctx.now, timed_out))
        return Answer("woken")

    loop, engine = await make({"w": lambda ctx: Wait(("k",), ctx.now + 10, resume),
                               "poke": lambda ctx: (engine.woken.add("k"), Answer("poked"))[1]})
    conn = Conn()
    feed(loop, conn, b"1:w")
    assert conn.sent == [] and loop.statistics()["waiting"] == 1
    assert conn.held_bytes == 3  # the parked request's frame counts against the connection's bound
    await trio.sleep(3)
    feed(loop, conn, b"2:poke")
    assert conn.sent == [b"2=poked", b"1=woken"]  # the waker's answer, then what it woke
    assert calls == [(pytest.approx(3.0, abs=0.01), False)] and loop.statistics()["waiting"] == 0
    assert conn.held_bytes == 0


async def test_a_waiter_resumes_timed_out_at_its_deadline_in_virtual_time(make, autojump_clock):
    loop, _ = await make({"w": lambda ctx: Wait(("k",), ctx.now + 30, lambda c, t: Answer(f"{c.now:.0f}/{t}"))})
    conn = Conn()
    start = trio.current_time()
    feed(loop, conn, b"1:w")
    await trio.sleep(31)
    assert conn.sent == [f"1={start + 30:.0f}/True".encode()]


async def test_equal_deadlines_resume_in_the_order_they_were_set(make, autojump_clock):
    loop, _ = await make({n: (lambda n: lambda ctx: Wait((), 100.0, lambda c, t: Answer(n)))(n) for n in "abc"})
    conn = Conn()
    for i, n in enumerate("bca"):
        feed(loop, conn, f"{i}:{n}".encode())
    await trio.sleep(200)
    assert conn.sent == [b"0=b", b"1=c", b"2=a"]


async def test_a_woken_waiter_is_not_resumed_until_its_connection_has_room(make):
    resumed = []
    loop, engine = await make({"w": lambda ctx: Wait(("k",), math.inf, lambda c, t: (resumed.append(1),
                                                                                         Answer("R"))[1])})
    conn = Conn()
    feed(loop, conn, b"1:w")
    conn.room = False
    loop.wake({"k"})
    assert resumed == [] and conn.sent == []  # its answer is not even built
    conn.make_room()
    assert resumed == [1] and conn.sent == [b"1=R"]


async def test_a_closed_connections_waiters_are_abandoned_never_resumed(make):
    events = []
    loop, _ = await make({"w": lambda ctx: Wait(("k",), ctx.now + 5, lambda c, t: events.append("resumed"),
                                                abandon=lambda ctx: events.append(("abandoned", ctx.client_id)))})
    conn, other = Conn(), Conn()
    feed(loop, conn, b"1:w")
    conn.room = False
    feed(loop, other, b"2:w")
    loop.wake({"k"})  # conn's waiter is queued for room, other's resumed
    assert events == ["resumed"]
    conn.closed = True
    loop.on_closed(conn)
    conn.make_room()
    assert events == ["resumed", ("abandoned", "c")] and loop.statistics()["waiting"] == 0


async def test_offloaded_work_runs_in_a_worker_thread_and_its_result_or_error_is_resumed(make):
    import threading

    main = threading.get_ident()

    def work():
        return threading.get_ident()

    def fail():
        raise OSError(28, "No space left on device")

    def resumed(ctx, result):
        if isinstance(result, BaseException):
            raise result
        return Answer("other thread" if result != main else "same thread")

    loop, _ = await make({"ok": lambda ctx: Offload(work, resumed), "bad": lambda ctx: Offload(fail, resumed)})
    conn = Conn()
    feed(loop, conn, b"1:ok")
    feed(loop, conn, b"2:bad")
    while len(conn.sent) < 2:
        await trio.sleep(0.01)
    assert sorted(conn.sent) == [b"1=other thread", b"2!STORAGE_ERROR"]


async def test_background_jobs_run_in_threads_and_complete_on_the_loop(make):
    done = []
    loop, engine = await make({"j": lambda ctx: (engine.jobs.append(Job(lambda: 41 + 1, done.append)),
                                                 Answer("queued"))[1]})
    conn = Conn()
    feed(loop, conn, b"1:j")
    while not done:
        await trio.sleep(0.01)
    assert done == [42]


async def test_the_timer_sleeps_until_the_engines_deadline_and_ticks_it(make, autojump_clock):
    def later(ctx):
        engine.deadline = ctx.now + 7
        return Answer("set")

    loop, engine = await make({"later": later})
    start = trio.current_time()
    feed(loop, Conn(), b"1:later")
    await trio.sleep(6.9)
    assert engine.ticks == []
    await trio.sleep(0.2)
    assert engine.ticks == [pytest.approx(start + 7)]


def test_the_server_spells_no_api_name():
    server = Path(__file__).resolve().parents[2] / "broker" / "server"
    sources = {p.name: p.read_text() for p in server.glob("*.py")}
    found = [(name, api) for name, text in sources.items() for api in REQUESTS
             if re.search(rf"[\"']{api}[\"']", text)]
    assert found == []


async def test_what_an_abandon_wakes_is_resumed_at_once(make):
    # e.g. a consumer that disconnects gives its messages back, and another consumer waiting on that queue gets them
    def leaving(ctx):
        return Wait(("mine",), math.inf, lambda c, t: Answer("never"), abandon=lambda c: engine.woken.add("queue"))

    loop, engine = await make({"leaving": leaving,
                               "waiting": lambda ctx: Wait(("queue",), math.inf, lambda c, t: Answer("got it"))})
    gone, other = Conn(), Conn()
    feed(loop, gone, b"1:leaving")
    feed(loop, other, b"2:waiting")
    gone.closed = True
    loop.on_closed(gone)
    assert other.sent == [b"2=got it"]


async def test_a_waiter_on_many_keys_decides_once_per_wake_not_once_per_key(make):
    # A produce of 64 batches waits on 64 partition keys; an fsync wakes all 64. Re-parked after deciding, it has
    # seen every change those keys stand for: it is not resumed again for the other 63 in the same pass.
    keys = tuple(f"p{i}" for i in range(64))
    decided = []

    def resume(ctx, timed_out):
        decided.append(1)
        return Wait(keys, math.inf, resume) if len(decided) < 3 else Answer("done")

    loop, engine = await make({"w": lambda ctx: Wait(keys, math.inf, resume)})
    conn = Conn()
    feed(loop, conn, b"1:w")
    loop.wake(set(keys))
    assert decided == [1] and conn.sent == []
    loop.wake(set(keys[:10]))  # a later change: decided again, once
    assert decided == [1, 1] and conn.sent == []
    loop.wake({keys[5]})
    assert decided == [1, 1, 1] and conn.sent == [b"1=done"]


async def test_a_change_made_while_waking_wakes_a_waiter_that_re_parked_before_it(make):
    # During one pass a resumed request changes what another waits for (and wakes its key): the other, re-parked
    # earlier in the pass, has not seen that change, so it is resumed again.
    state = {"ready": False}
    order = []

    def watcher(ctx, timed_out):
        order.append("watcher")
        return Answer("seen") if state["ready"] else Wait(("a", "b"), math.inf, watcher)

    def maker(ctx, timed_out):
        order.append("maker")
        state["ready"] = True
        engine.woken.add("a")
        return Answer("made")

    loop, engine = await make({"watch": lambda ctx: Wait(("a", "b"), math.inf, watcher),
                               "make": lambda ctx: Wait(("b",), math.inf, maker)})
    conn = Conn()
    feed(loop, conn, b"1:watch")
    feed(loop, conn, b"2:make")
    loop.wake({"a", "b"})
    assert conn.sent.count(b"1=seen") == 1 and b"2=made" in conn.sent
    assert order.count("maker") == 1


class Plan:
    """A sync plan of ``parts`` files whose run takes ``run_s`` of ``clock`` and notes the thread it ran in."""

    whole_filesystem = False

    def __init__(self, parts: int, run_s: float, threads: list[int], clock: list[float]):
        self.parts = [object()] * parts
        self.run_s = run_s
        self.threads = threads
        self.clock = clock

    def run(self):
        import threading

        self.threads.append(threading.get_ident())
        self.clock[0] += self.run_s

    def split(self, pieces):
        return [self]

    def close(self):
        pass


@pytest.mark.parametrize("fsync", ["always", "interval"])
async def test_a_quick_small_sync_plan_runs_on_the_loop_only_under_fsync_always_and_a_slow_one_goes_to_a_thread(
        nursery, fsync):
    import threading

    from millpond.broker.server.loop import SYNC_INLINE_S

    main = threading.get_ident()
    threads: list[int] = []
    plans: list[Plan] = []
    now = [0.0]  # the loop's wall clock, seconds, moved only by the plans' runs
    engine = Engine({})
    engine.sync_plan = lambda: plans.pop(0) if plans else None
    engine.synced = lambda plan, error: set()
    loop = RequestLoop(engine, Codec(), fsync=fsync, fsync_interval_s=1.0, poll_clock=lambda: now[0])
    await nursery.start(loop.run)

    async def flush(parts: int, run_s: float = 0.0) -> bool:
        """One plan through the loop; True if it ran on the loop's own thread."""
        plans.append(Plan(parts, run_s, threads, now))
        await loop.flush()
        return threads[-1] == main

    if fsync == "interval":  # a thread whatever the plan
        assert [await flush(1), await flush(2)] == [False, False]
        return
    assert [await flush(1), await flush(2), await flush(3)] == [True, True, False]  # up to 2 files on the loop
    assert await flush(1, run_s=0.03)  # quick until now: on the loop
    assert loop.sync_time_s == pytest.approx(0.2 * 0.03)  # the moving average, a fifth of each run
    back = [await flush(1) for _ in range(12)]
    # slow lately: worker threads, until their quick runs bring the average under 1 ms: 0.006 x 0.8^9 < 0.001
    assert back == [False] * 9 + [True] * 3
    assert loop.sync_time_s < SYNC_INLINE_S
