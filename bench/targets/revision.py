# A git revision of millpond as a target, `millpond@REV` (e.g. the previous main), so figures of this tree and of
# that revision are measured side by side in one run on one machine. The revision's tree comes from `git archive`
# of the repository this millpond runs from, unpacked once per commit under the temporary directory; its broker is
# started and its client driven by that revision's own bench target (its bench/targets/millpond.py), each call in
# a child process whose import path is that tree only (bench/targets/revrunner.py). Both layouts are handled:
# top-level `broker`/`client`/`bench` packages (before b8c47d8) and the `millpond` package (the repository root).
# Must not know how figures are computed.
from __future__ import annotations

import atexit
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from millpond.bench.plans import (
    ConsumeOutcome,
    ConsumePlan,
    E2EConsumeOutcome,
    E2EPlan,
    E2EProduceOutcome,
    ProduceOutcome,
    ProducePlan,
)
from millpond.bench.targets import LocalServer, PeerUnavailable, TargetFailed, Tick, revrunner

PREFIX = "millpond@"
REPO_ENV = "MILLPOND_BENCH_REPO"  # a git checkout of millpond to take revisions from (default: this one)
# `millpond@worktree`: this tree as it is, driven the way a revision is (client and broker in child processes): an
# A/A check that running a client in a child process instead of in the bench process does not bias a comparison.
WORKTREE = "worktree"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
HERE = Path(__file__).resolve().parent
RUNNER = HERE / "revrunner.py"
AWAITED = HERE / "awaited.py"


class RevisionError(RuntimeError):
    """The revision cannot be measured here (no git checkout, unknown revision, a tree too old to drive)."""


def is_revision(name: str) -> bool:
    return name.startswith(PREFIX)


def repository() -> Path:
    """The git repository revisions come from: $MILLPOND_BENCH_REPO if set, else the checkout this millpond runs
    from (bench/ is one of its folders)."""
    here = Path(os.environ.get(REPO_ENV) or HERE.parent.parent)
    return Path(_git(here, "rev-parse", "--show-toplevel", what="a git checkout (set MILLPOND_BENCH_REPO to one)"))


def resolve(rev: str, repo: Path | None = None) -> str:
    """The full commit id ``rev`` names in the repository (RevisionError if none)."""
    if not rev or rev.startswith("-"):
        raise RevisionError(f"{PREFIX}{rev}: name a git revision, e.g. {PREFIX}HEAD~1")
    return _git(repo or repository(), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}",
                what=f"revision {rev!r}")


def label(rev: str) -> str:
    """``millpond@<short commit id>``: the target name a revision is reported under (stable across spellings);
    ``millpond@worktree`` for this tree itself."""
    return PREFIX + (WORKTREE if rev == WORKTREE else resolve(rev)[:7])


@dataclass(frozen=True)
class Tree:
    """A revision unpacked: ``import_root`` is what PYTHONPATH holds; ``prefix`` is '' (top-level packages) or
    'millpond.'; ``subject`` and ``date`` describe the commit."""

    commit: str
    import_root: Path
    prefix: str
    subject: str
    date: str


def checkout(rev: str) -> Tree:
    """Unpack ``rev`` (once per commit, shared by every process of the run) and tell its layout."""
    if rev == WORKTREE:
        return _worktree()
    return _checkout(repository(), rev)


@lru_cache(maxsize=None)
def _worktree() -> Tree:
    """This millpond as installed, under a folder of its own holding only a ``millpond`` link to it."""
    root = HERE.parent.parent
    base = Path(tempfile.mkdtemp(prefix="millpond-bench-worktree-"))
    (base / "millpond").symlink_to(root, target_is_directory=True)
    atexit.register(shutil.rmtree, base, True)
    return Tree(WORKTREE, base, "millpond.", "this tree as it is", "now")


@lru_cache(maxsize=None)
def _checkout(repo: Path, rev: str) -> Tree:
    commit = resolve(rev, repo)
    base = Path(tempfile.gettempdir()) / f"millpond-bench-rev-{commit}"
    if not (base / "complete").exists():
        data = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit], capture_output=True,
                              check=True).stdout
        tmp = Path(tempfile.mkdtemp(prefix=f"millpond-bench-rev-{commit[:7]}-", dir=tempfile.gettempdir()))
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            try:
                tar.extractall(tmp / "millpond", filter="data")
            except TypeError:  # Python < 3.11.4: no extraction filters (our own repository's archive)
                tar.extractall(tmp / "millpond")
        (tmp / "complete").write_text(commit + "\n")
        try:
            os.rename(tmp, base)
        except OSError:  # another process of this run unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
    pkg = base / "millpond"
    if not (pkg / "bench" / "targets" / "millpond.py").is_file():
        raise RevisionError(f"{PREFIX}{rev}: commit {commit[:7]} has no bench/targets/millpond.py to drive it with")
    packaged = (pkg / "__init__.py").is_file()
    subject, date = _git(repo, "log", "-1", "--format=%s%x00%cs", commit, what=commit).split("\0")
    return Tree(commit, base if packaged else pkg, "millpond." if packaged else "", subject, date)


class RevisionTarget:
    """``millpond@REV``: that revision's broker and client, each call made in a child process."""

    def __init__(self, rev: str) -> None:
        self.rev = rev
        self.name = PREFIX + rev
        self._client_cpu_s: float | None = None

    def missing(self) -> str | None:
        try:
            checkout(self.rev)
        except (RevisionError, OSError, subprocess.CalledProcessError) as exc:
            return str(exc)
        return None

    def describe(self) -> dict[str, str]:
        t = checkout(self.rev)
        subject = t.subject if len(t.subject) <= 60 else t.subject[:57] + "..."
        layout = "package millpond" if t.prefix else "top-level packages"
        server = ("this tree as it is (an A/A check)" if t.commit == WORKTREE
                  else f"millpond at {t.commit[:7]} ({t.date}, \"{subject}\")")
        return {"server": server,
                "client": f"its own client and bench loops ({layout}) in child processes",
                "durability": "its fsync mode, as the row says"}

    @contextmanager
    def server(self, fsync: str, address: str | None) -> Iterator[LocalServer]:
        if address:
            raise PeerUnavailable(f"{self.name} starts its own broker (--broker is for this tree's millpond)")
        child = self._spawn({"method": "serve", "fsync": fsync}, keep_stdin=True)
        try:
            kind, body = _next(child, START_TIMEOUT_S)
            if kind != "server":
                raise PeerUnavailable(f"its broker did not start: {_why(kind, body, child)}")
            info = json.loads(body)
            yield LocalServer(info["address"], fsync, info["pid"] or child.pid)
        finally:
            _finish(child)

    def create_topic(self, address: str, topic: str, partitions: int) -> None:
        self._call("create_topic", {"address": address, "topic": topic, "partitions": partitions})

    def topic_records(self, address: str, topic: str) -> dict[int, tuple[int, int]]:
        got = self._call("topic_records", {"address": address, "topic": topic})
        return {int(p): (int(a), int(b)) for p, (a, b) in got.items()}

    def produce(self, address: str, topic: str, plan: ProducePlan, tick: Tick) -> ProduceOutcome:
        return _outcome(ProduceOutcome, self._call("produce", _plan_args(address, topic, plan), tick))

    def send_await(self, address: str, topic: str, plan: ProducePlan, tick: Tick) -> ProduceOutcome:
        return _outcome(ProduceOutcome, self._call("send_await", _plan_args(address, topic, plan), tick))

    def consume(self, address: str, topic: str, plan: ConsumePlan, tick: Tick) -> ConsumeOutcome:
        return _outcome(ConsumeOutcome, self._call("consume", _plan_args(address, topic, plan), tick))

    def e2e_produce(self, address: str, topic: str, plan: E2EPlan, tick: Tick) -> E2EProduceOutcome:
        return _outcome(E2EProduceOutcome, self._call("e2e_produce", _plan_args(address, topic, plan), tick))

    def e2e_consume(self, address: str, topic: str, plan: E2EPlan, ready: Callable[[], None]) -> E2EConsumeOutcome:
        return _outcome(E2EConsumeOutcome, self._call("e2e_consume", _plan_args(address, topic, plan),
                                                      ready=ready))

    def client_cpu_s(self) -> float | None:
        """CPU seconds the child process's client used in the last call (the workloads' client CPU figure)."""
        return self._client_cpu_s

    def _spawn(self, job: dict[str, Any], keep_stdin: bool = False) -> subprocess.Popen:
        """The runner with ``job`` as the first line of its stdin (closed after it unless ``keep_stdin``)."""
        tree = checkout(self.rev)
        job = {**job, "prefix": tree.prefix, "awaited_path": str(AWAITED)}
        env = {**os.environ, "PYTHONPATH": str(tree.import_root)}
        log = tempfile.TemporaryFile("w+")  # the child's stderr: a pipe nobody reads could fill up and stall it
        # -P: neither the script's folder (this tree's bench/targets) nor the working directory joins sys.path.
        child = subprocess.Popen([sys.executable, "-P", str(RUNNER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=log, text=True, env=env, cwd=str(tree.import_root))
        child.stderr_log = log  # type: ignore[attr-defined]
        assert child.stdin is not None
        child.stdin.write(json.dumps(job) + "\n")
        child.stdin.flush()
        if not keep_stdin:
            child.stdin.close()
        return child

    def _call(self, method: str, args: dict[str, Any], tick: Tick | None = None,
              ready: Callable[[], None] | None = None) -> Any:
        plan_class = args.pop("_class", None)
        job = {"method": method, "args": revrunner.encode(args), "plan_class": plan_class}
        child = self._spawn(job)
        try:
            while True:
                kind, body = _next(child, None)
                if kind == "tick" and tick is not None:
                    tick(int(body))
                elif kind == "ready" and ready is not None:
                    ready()
                elif kind == "result":
                    got = json.loads(body)
                    self._client_cpu_s = got["client_cpu_s"]
                    return revrunner.decode(got["value"])
                elif kind not in ("tick", "ready"):
                    raise TargetFailed(f"{self.name} {method}: {_why(kind, body, child)}")
        finally:
            _finish(child)


@lru_cache(maxsize=None)
def target(rev: str) -> RevisionTarget:
    return RevisionTarget(rev)


def _plan_args(address: str, topic: str, plan: Any) -> dict[str, Any]:
    return {"address": address, "topic": topic, "plan": dataclasses.asdict(plan), "_class": type(plan).__name__}


def _outcome(cls: Any, fields: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in fields.items() if k in known})


def _next(child: subprocess.Popen, timeout_s: float | None) -> tuple[str, str]:
    """The child's next protocol line as (kind, rest); ('eof', '') when it exited without one."""
    assert child.stdout is not None
    while True:
        if timeout_s is not None:
            import selectors

            with selectors.DefaultSelector() as sel:
                sel.register(child.stdout, selectors.EVENT_READ)
                if not sel.select(timeout_s):
                    return "timeout", f"nothing after {timeout_s:g} s"
        line = child.stdout.readline()
        if not line:
            return "eof", ""
        if line.startswith(revrunner.MARK):
            kind, _, rest = line[len(revrunner.MARK):].rstrip("\n").partition(" ")
            return kind, rest


def _why(kind: str, body: str, child: subprocess.Popen) -> str:
    """One line: the child's error (the last line of its traceback, which names the root cause), or its end."""
    if kind == "error":
        lines = [ln for ln in json.loads(body).strip().splitlines() if ln.strip()]
    else:
        log = child.stderr_log  # type: ignore[attr-defined]
        log.seek(0)
        lines = [f"the child process ended ({kind} {body})".replace(" )", ")")]
        lines += [ln for ln in log.read().strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else kind


def _finish(child: subprocess.Popen) -> None:
    if child.stdin is not None:
        try:
            child.stdin.close()  # a serving child stops its broker when its stdin closes
        except OSError:
            pass
    try:
        child.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    if child.stdout is not None:
        child.stdout.close()
    child.stderr_log.close()  # type: ignore[attr-defined]


def _git(repo: Path, *args: str, what: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RevisionError(f"git is needed to measure a millpond revision: {exc}") from exc
    if out.returncode != 0 or not out.stdout.strip():
        raise RevisionError(f"{what} not found in {repo}" + (f": {out.stderr.strip()}" if out.stderr.strip() else ""))
    return out.stdout.strip()
