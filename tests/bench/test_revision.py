# `millpond@REV` targets: a git revision's tree unpacked and driven in child processes whose import path is that
# tree only, in both layouts (top-level broker/client/bench packages, as before b8c47d8, and the millpond package).
# The fast tests use a throwaway git repository holding a fake "millpond" whose bench target keeps its records in
# files (no broker), so what is checked is the plumbing: plans and outcomes across the process boundary, ticks,
# the e2e consumer's ready line, errors, layouts, the generic send_await loop, the skip line for a revision that
# cannot be measured. One slow test drives the real previous main (5f7039c) where this checkout has it.
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from millpond.bench import cli, targets
from millpond.bench.plans import ProducePlan
from millpond.bench.targets import revision

BENCH = Path(cli.__file__).resolve().parent
PREVIOUS_MAIN = "5f7039c"
pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed: no revision to measure")

FAKE_TARGET = '''
import os, shutil, tempfile, time
from contextlib import contextmanager
from pathlib import Path

from .. import plans


class Server:
    def __init__(self, address, fsync):
        self.address, self.fsync, self.pid = address, fsync, os.getpid()


class Fake:
    name = "millpond"

    @contextmanager
    def server(self, fsync, address):
        d = tempfile.mkdtemp(prefix="fake-broker-")
        Path(d, "fsync").write_text(fsync)
        try:
            yield Server(d, fsync)
        finally:
            shutil.rmtree(d)

    def create_topic(self, address, topic, partitions):
        Path(address, topic).write_text("0")

    def topic_records(self, address, topic):
        return {0: (0, int(Path(address, topic).read_text()))}

    def _append(self, address, topic, n):
        path = Path(address, topic)
        path.write_text(str(int(path.read_text()) + n))

    def produce(self, address, topic, plan, tick):
        n = plan.count if plan.count is not None else 1000
        first = time.perf_counter()
        for _ in range(n // 100):
            tick(100)
        self._append(address, topic, n)
        size = sum(len(plan.values[i % len(plan.values)]) for i in range(n))
        return plans.ProduceOutcome(n, size, first, time.perf_counter() + 0.01, b"")

    def consume(self, address, topic, plan, tick):
        first = time.perf_counter()
        return plans.ConsumeOutcome(plan.expected, first, first + 0.01)

    def e2e_produce(self, address, topic, plan, tick):
        first = time.perf_counter()
        self._append(address, topic, plan.count)
        Path(address, topic + ".part").write_text(str(plan.count))
        Path(address, topic + ".part").rename(Path(address, topic + ".sent"))  # whole, for the consumer
        return plans.E2EProduceOutcome(plan.count, 16 * plan.count, first, first + 0.01, first + 0.01, 0.0)

    def e2e_consume(self, address, topic, plan, ready):
        ready()
        done = Path(address, topic + ".sent")
        give_up = time.monotonic() + 30
        while not done.exists() and time.monotonic() < give_up:
            time.sleep(0.01)
        return plans.E2EConsumeOutcome(int(done.read_text()), b"")
'''

FAKE_SEND_AWAIT = '''
    def send_await(self, address, topic, plan, tick):
        out = self.produce(address, topic, plan, tick)
        out.error = ""
        return out
'''

FAKE_CLIENT = '''
from contextlib import asynccontextmanager
from pathlib import Path


class Producer:
    def __init__(self, address):
        self.address = address

    async def send(self, topic, value):
        path = Path(self.address, topic)
        path.write_text(str(int(path.read_text()) + 1))


class Client:
    def __init__(self, address):
        self.address = address

    @asynccontextmanager
    async def producer(self, **options):
        yield Producer(self.address)


@asynccontextmanager
async def connect(address, client_id=None):
    yield Client(address)
'''


def _fake_repo(root: Path, *, packaged: bool, send_await: bool) -> Path:
    """A git repository with one commit: a fake millpond in the old layout or the millpond-package one."""
    repo = root / ("packaged" if packaged else "top-level")
    files = {
        "bench/__init__.py": "",
        "bench/plans.py": (BENCH / "plans.py").read_text(),
        "bench/stats.py": (BENCH / "stats.py").read_text(),
        "bench/targets/__init__.py": "",
        "bench/targets/millpond.py": FAKE_TARGET + (FAKE_SEND_AWAIT if send_await else "") + "\nTARGET = Fake()\n",
        "client/__init__.py": FAKE_CLIENT,
        "broker/__init__.py": "",
    }
    if packaged:
        files["__init__.py"] = ""
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "fake millpond"], check=True)
    return repo


@pytest.fixture
def own_tmp(tmp_path, monkeypatch):
    """Unpacked revisions go under tmp_path, in this process and in the child processes."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _use(repo: Path, monkeypatch) -> None:
    monkeypatch.setenv(revision.REPO_ENV, str(repo))


TINY = ["--warmup-s", "0", "--no-progress", "--json", "--peers", "none"]


@pytest.mark.parametrize("packaged", [False, True], ids=["top-level-layout", "millpond-package"])
def test_a_revision_runs_every_shared_workload_in_child_processes(own_tmp, monkeypatch, capsys, packaged):
    repo = _fake_repo(own_tmp, packaged=packaged, send_await=packaged)  # top-level: the generic send_await loop
    _use(repo, monkeypatch)
    name = revision.label("HEAD")
    assert name == "millpond@" + subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=7", "HEAD"],
                                                capture_output=True, text=True).stdout.strip()
    assert cli.main(["compare", "--target", "millpond@HEAD", "--count", "300", "--fsync", "always,never",
                     *TINY]) == 0
    doc = json.loads(capsys.readouterr().out)
    got = {(r["workload"], r["record_bytes"], r["fsync"]): r for r in doc["results"]}
    assert {r["target"] for r in doc["results"]} == {name}
    assert {r["revision"] for r in doc["results"]} == {name.split("@")[1]}
    for mode in ("always", "never"):
        for size in (100, 1024):
            assert got["produce", size, mode]["records"]["median"] == 300
            assert got["consume", size, mode]["records"]["median"] == 300
            assert got["e2e", size, mode]["records"]["median"] == 300
        assert got["send_await", 100, mode]["records"]["median"] == 300
        assert got["send_await", 100, mode]["step"] == f"{name} send_await 100 B fsync={mode}"
    # the client's CPU is the child's, reported back (not this process's, which only waited)
    assert got["produce", 100, "always"]["client_cpu_s_per_wall_s"]["median"] is not None
    about = got["produce", 100, "always"]["about"]
    assert "fake millpond" in about["server"]
    assert ("package millpond" if packaged else "top-level packages") in about["client"]


def test_a_revision_call_returns_the_revisions_outcome_with_ticks(own_tmp, monkeypatch):
    _use(_fake_repo(own_tmp, packaged=False, send_await=False), monkeypatch)
    target = targets.get("millpond@HEAD")
    assert target.missing() is None
    ticks: list[int] = []
    with target.server("never", None) as server:
        assert server.fsync == "never" and Path(server.address, "fsync").read_text() == "never"
        target.create_topic(server.address, "t", 1)
        plan = ProducePlan(values=(b"x" * 100, b"y" * 5000), count=4000, duration_s=None, batch_bytes=None,
                           linger_s=None)
        out = target.produce(server.address, "t", plan, ticks.append)
        assert (out.records, out.payload_bytes, out.failed) == (4000, 2000 * 5100, 0)
        assert sum(ticks) == 4000  # forwarded from the child, batched
        assert target.topic_records(server.address, "t") == {0: (0, 4000)}
        assert target.client_cpu_s() is not None
    assert not Path(server.address).exists()  # the child stopped its server when its stdin closed


def test_a_failing_call_in_the_revision_aborts_the_run_with_its_error(own_tmp, monkeypatch, capsys):
    _use(_fake_repo(own_tmp, packaged=True, send_await=True), monkeypatch)
    target = targets.get("millpond@HEAD")
    with target.server("always", None) as server:
        with pytest.raises(targets.TargetFailed, match="FileNotFoundError"):
            target.topic_records(server.address, "no-such-topic")


@pytest.mark.parametrize("rev, why", [("no-such-rev", "revision 'no-such-rev' not found"),
                                      ("HEAD", "has no bench/targets/millpond.py")])
def test_a_revision_that_cannot_be_measured_is_skipped_with_a_line(own_tmp, monkeypatch, capsys, rev, why):
    repo = own_tmp / "empty"
    repo.mkdir()
    (repo / "README").write_text("not millpond\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "not millpond"], check=True)
    _use(repo, monkeypatch)
    assert cli.main(["produce", "--target", f"millpond@{rev}", "--count", "10", *TINY]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["results"] == []
    ((name, reason),) = doc["skipped"].items()
    assert name.startswith("millpond@") and why in reason
    assert f"skipping {name}: " in err


def test_against_names_revisions_by_short_commit_after_the_target(monkeypatch):
    monkeypatch.setattr(revision, "label", lambda rev: "millpond@" + {"HEAD~1": "abc1234"}.get(rev, rev))
    args = cli.build_parser().parse_args(["compare", "--against", "HEAD~1", "--peers", "redis"])
    # this tree also hosted like the revision (millpond@worktree): the revision is compared with that
    assert cli.target_names(args) == ["millpond", "millpond@worktree", "millpond@abc1234", "redis", "redis-aof"]
    args = cli.build_parser().parse_args(["produce", "--target", "millpond@HEAD~1"])
    assert cli.target_names(args) == ["millpond@abc1234"]


@pytest.mark.slow
def test_the_previous_main_runs_beside_this_tree_or_is_skipped_with_a_line(capsys):
    """The real 5f7039c (top-level packages): its broker and client, a tiny produce and send_await."""
    rc = cli.main(["produce", "--target", f"millpond@{PREVIOUS_MAIN}", "--count", "2000", *TINY])
    out, err = capsys.readouterr()
    assert rc == 0
    doc = json.loads(out)
    if doc["skipped"]:  # e.g. a shallow clone without that commit
        ((name, why),) = doc["skipped"].items()
        assert f"skipping {name}: {why}" in err
        return
    (row,) = doc["results"]
    assert row["target"] == f"millpond@{PREVIOUS_MAIN}" and row["records"]["median"] == 2000
    assert row["fsync"] == "always" and row["p50_ms"]["median"] > 0


@pytest.mark.slow
def test_this_tree_beside_itself_as_a_revision_gives_ratios_for_the_a_a_check(capsys):
    assert cli.main(["produce", "--against", "worktree", "--count", "2000", "--fsync", "never", *TINY]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["target"] for r in doc["results"]] == ["millpond", "millpond@worktree"]
    (ratio,) = doc["revision_ratios"]
    assert (ratio["revision"], ratio["fsync"]) == ("millpond@worktree", "never") and ratio["records_per_s"] > 0
