"""Load benchmark of the sync server: simulated devices upload through the real ``SyncClient``
to a real ``pocketrec serve`` on loopback.

Each simulated device is a real device store (``pocketrec.storage.Store``, durability "full", its
file on ``/dev/shm`` when there is one: the stores stand for phones, so their fsyncs must not
queue on the server's disk) and the project's ``SyncClient`` with ``batch_events=--batch``.
Before the run each device logs ``--prefill`` events (its backlog, in ``append_many`` calls of
500): logging is the app's work, not the sync client's, and doing it inside the window cost the
load generator ~40% more CPU (py-spy), CPU the 2-core machine then takes from the server. Devices
then run sync passes back to back (a closed loop: the server's capacity sets the pace), each
uploading everything pending batch by batch through the client's real path (``Store.pending``,
``still_pending`` before every send, the JSON body, one kept-alive HTTP connection for the
requests of a pass, closed when the pass ends, retries with backoff, ``mark_uploaded`` after the
2xx); a device whose backlog runs out logs ``--chunk`` batches more (counted in the load
generator's CPU). ``--devices`` devices run as threads in ``--processes`` processes. The only
instrumentation on the client is a subclass of its ``HttpClient`` that times each ``POST`` and
reads the ``new`` count of its reply; with ``--connections per-request`` it also closes the
connection after every request, as the device client did before it kept connections alive
(``per-sync``, the default, is the client as it is; ``per-sync,per-request`` runs every server
configuration both ways, interleaved, and the baseline only per request, with the client of its
time).

Per run (a fresh database each time): after ``--warmup`` seconds a window of ``--duration``
seconds is measured; then the devices stop logging and drain what is pending, the server is
stopped and its database read directly (SQL):

- events/s stored: events the server counted as new in 2xx replies within the window ÷ window;
- p50/p99 latency of the window's 2xx ``POST /v1/events`` (client side, connect to last byte);
- CPU seconds per 1,000 events stored: utime+stime (``/proc/<pid>/stat``, children reaped
  included) of the server's process tree and of every process of the PostgreSQL cluster
  (postmaster and children), between the window's ends; the load generator's and the whole
  machine's CPU are printed beside them;
- exactly-once: the event ids the devices' stores mark uploaded (a 2xx was received) must equal
  the ids the server holds, with no id stored twice and nothing left pending.

Configurations, run interleaved for ``--repeats`` repeats: ``baseline`` (the SQLite server as of
commit ``361a9d0``, before group commit and PostgreSQL: ``git archive`` of that commit installed
once with ``pip install --no-deps --target`` into a cache folder and run with ``PYTHONPATH``
pointing there; same wire format; ``uvloop``/``httptools``, which it did not depend on, are
hidden from it), ``sqlite`` (this tree, one worker: ``serve`` refuses more on SQLite) and
``postgres`` (this tree, ``--workers`` workers). ``--faults`` adds runs that SIGKILL a server
worker a third into the window (uvicorn's supervisor restarts it; a single-process server is
restarted by the bench) and restart PostgreSQL (``pg_ctl restart -m fast``) at two thirds: 0
acknowledged events may be lost and 0 duplicated. Medians over the repeats and the ratios to the
baseline are printed last (markdown), and everything goes to ``--json``.

PostgreSQL comes from ``tools/with_postgres.sh`` (``POCKETREC_TEST_POSTGRES``; ``--faults`` needs
``POCKETREC_TEST_PGDATA``/``POCKETREC_TEST_PGBIN``, which it sets too). From the repository root::

    tools/with_postgres.sh .venv/bin/python bench/bench_server.py --devices 200 --repeats 3 \
        --duration 15 --prefill 1200 --faults --workers 2 --connections per-sync,per-request

``--profile DIR`` writes py-spy's collapsed stacks (``--gil``: CPU, not waiting) of the server
and of one load process for each run's window (``pip install py-spy``).

The machine is shared by the load generator, the server and the database: read the load
generator's and the machine's CPU next to the server's, and compare medians, never one run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "361a9d0"
"""The server before this work: one SQLite connection behind one lock, one fsync per batch."""
CONTEXT = {"screen": "home", "position": 3}
TICKS = os.sysconf("SC_CLK_TCK")
BASELINE_LACKS = ("uvloop", "httptools")
"""Packages the baseline commit did not depend on: hidden from its server, which would otherwise
pick them up (uvicorn's ``loop``/``http`` ``"auto"``) from this environment."""
DRAIN_PASSES = 50
"""Sync passes a device makes after the window to deliver what is still pending."""


# --------------------------------------------------------------------------- CPU accounting


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime+stime+cutime+cstime in seconds) of a live process, else ``None``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # after the name: state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based here
    return int(fields[1]), sum(int(v) for v in fields[11:15]) / TICKS


def tree_cpu_seconds(roots: Sequence[int]) -> float:
    """CPU seconds of the processes ``roots`` and all their live descendants: each one's own
    time plus that of its children it has reaped (so a worker that died and was reaped by its
    supervisor still counts, once)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := _stat(int(entry))) is not None:
            stats[int(entry)] = found
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, [r for r in roots if r in stats], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(children.get(pid, []))
    return total


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / TICKS, sum(values[:8]) / TICKS


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    """The cluster ``tools/with_postgres.sh`` started: ``base`` URI, data folder, binaries."""

    base: str
    pgdata: str | None
    pgbin: str | None

    @classmethod
    def from_env(cls) -> Postgres | None:
        base = os.environ.get("POCKETREC_TEST_POSTGRES")
        if not base:
            return None
        return cls(base, os.environ.get("POCKETREC_TEST_PGDATA"),
                   os.environ.get("POCKETREC_TEST_PGBIN"))  # fmt: skip

    def uri(self, dbname: str) -> str:
        parts = urlsplit(self.base)  # (urlunsplit would drop the empty host of postgresql:///)
        query = f"?{parts.query}" if parts.query else ""
        return f"{parts.scheme}://{parts.netloc}/{dbname}{query}"

    def execute(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(statement.encode())

    def postmaster(self) -> int | None:
        if self.pgdata is None:
            return None
        try:
            return int(Path(self.pgdata, "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def restart(self) -> float:
        """``pg_ctl restart -m fast`` (as the ``postgres`` user when running as root); returns
        the seconds it took."""
        if self.pgdata is None or self.pgbin is None:
            raise SystemExit("--faults with postgres needs POCKETREC_TEST_PGDATA/_PGBIN "
                             "(run under tools/with_postgres.sh)")  # fmt: skip
        command = [f"{self.pgbin}/pg_ctl", "-D", self.pgdata, "-m", "fast", "-w", "restart"]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        began = time.monotonic()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.monotonic() - began


# --------------------------------------------------------------------------- the server


def baseline_site(commit: str, cache: Path) -> Path:
    """The server of ``commit`` installed (``pip install --no-deps --target``) into
    ``cache/<full sha>``, once; returns that folder (for ``PYTHONPATH``)."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", commit], check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    target = cache / sha
    if (target / "pocketrec" / "server" / "running.py").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        source, staged = Path(work, "src"), Path(work, "site")
        source.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", sha], check=True,
                                 capture_output=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
             "--target", str(staged), str(source)],
            check=True,
        )  # fmt: skip
        staged.rename(target)
    return target


@dataclass(frozen=True)
class Config:
    """One server configuration under test."""

    name: str
    backend: str  # "sqlite" or "postgres"
    workers: int = 1
    baseline: bool = False
    faults: bool = False
    per_request: bool = False  # the load generator closes its connection after every request


REGISTER = """
import json, sys
import pocketrec.server.storage as storage
db, count = sys.argv[1], int(sys.argv[2])
opened = (storage.open_storage(db) if hasattr(storage, "open_storage")
          else storage.SqliteFeedbackStorage(db))
tokens = [[f"dev{i:04d}", opened.add_device(f"dev{i:04d}")] for i in range(count)]
opened.close()
print(json.dumps(tokens))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``pocketrec serve`` of this tree or of the baseline in a child process."""

    def __init__(self, config: Config, db: str, folder: Path, env: dict[str, str]) -> None:
        self.config, self.db, self.folder, self.env = config, db, folder, env
        self.port = free_port()
        self.bundles = folder / "published"
        self.bundles.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = (folder / "server.log").open("ab")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def python(self, *args: str, capture: bool = False) -> str:
        result = subprocess.run([sys.executable, *args], env=self.env, check=True,
                                capture_output=capture, text=True, cwd=self.folder)  # fmt: skip
        return result.stdout

    def register(self, count: int) -> list[tuple[str, str]]:
        return [tuple(p) for p in json.loads(self.python("-c", REGISTER, self.db, str(count),
                                                         capture=True))]  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        command = [sys.executable, "-m", "pocketrec", "serve", "--db", self.db, "--bundles",
                   str(self.bundles), "--port", str(self.port)]  # fmt: skip
        if self.config.workers > 1:
            command += ["--workers", str(self.config.workers)]
        self.process = subprocess.Popen(command, env=self.env, stdout=self.log, stderr=self.log,
                                        cwd=self.folder)  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; see {self.folder}/server.log")
            time.sleep(0.05)
        if self.config.workers > 1:  # every worker up, so none is still importing
            while len(self.workers()) < self.config.workers:
                if time.monotonic() > deadline:
                    raise RuntimeError("the server's workers did not start")
                time.sleep(0.05)

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/v1/health")  # the baseline has no /healthz
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def workers(self) -> list[int]:
        """The worker processes of a ``--workers N`` server (uvicorn's spawned children)."""
        assert self.process is not None
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or (stat := _stat(int(entry))) is None:
                continue
            if stat[0] != self.process.pid:
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                found.append(int(entry))
        return found

    def kill_worker(self) -> str:
        """SIGKILL one worker (the supervisor restarts it) or, with one process, the server
        (restarted here at once on the same port); says what it did."""
        assert self.process is not None
        if self.config.workers > 1:
            victim = self.workers()[0]
            os.kill(victim, signal.SIGKILL)
            return f"SIGKILL worker {victim} (restarted by uvicorn's supervisor)"
        victim = self.process.pid
        self.process.kill()
        self.process.wait()
        began = time.monotonic()
        self.start()
        return f"SIGKILL server {victim}, restarted in {time.monotonic() - began:.1f} s"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceSpec:
    url: str
    devices: list[tuple[str, str]]
    store_dir: str
    batch: int
    chunk: int
    prefill: int
    out: str
    per_request: bool = False


def device_process(spec: DeviceSpec, ready: Any, go: Any, stop: Any) -> None:
    """One load-generator process: a thread per device (module docstring); writes the timed
    POSTs and every device's acknowledged event ids to ``spec.out`` (JSON)."""
    from pocketrec.runtime.sync.client import SyncClient
    from pocketrec.runtime.sync.http import HttpClient, NetworkError, Response
    from pocketrec.storage import NewEvent, Store

    posts: list[tuple[float, float, int, int]] = []  # (end, seconds, status, new)

    class TimedHttpClient(HttpClient):
        def post_json(self, path: str, body: bytes, *, idempotent: bool = False) -> Response:
            began = time.monotonic()
            try:
                response = super().post_json(path, body, idempotent=idempotent)
            except NetworkError:
                posts.append((time.monotonic(), time.monotonic() - began, 0, 0))
                raise
            ended = time.monotonic()
            if spec.per_request:
                self.close()  # one connection per request: the client before keep-alive
            new = 0
            if 200 <= response.status < 300:
                new = int(json.loads(response.body)["new"])
            posts.append((ended, ended - began, response.status, new))
            return response

    acked: list[str] = []
    problems: list[str] = []
    lock = threading.Lock()

    def device(device_id: str, token: str) -> None:
        path = Path(spec.store_dir) / f"{device_id}.sqlite"
        store = Store.open(path)
        client = SyncClient(store, spec.url, token, batch_events=spec.batch)
        client.client = TimedHttpClient(spec.url, token, timeout=30.0)
        users = [f"user{k}" for k in range(5)]
        logged = 0

        def log(count: int) -> None:
            nonlocal logged
            store.append_many(
                NewEvent(users[(logged + k) % 5], f"i{(logged + k) * 7919 % 5000:05d}", "click",
                         context=CONTEXT)
                for k in range(count)
            )  # fmt: skip
            logged += count

        signalled = False
        try:
            while logged < spec.prefill:
                log(min(500, spec.prefill - logged))
            ready.put(device_id)
            signalled = True
            go.wait()
            while not stop.is_set():
                if store.stats().pending_events < spec.batch:
                    log(spec.batch * spec.chunk)
                client.run()
            for _ in range(DRAIN_PASSES):
                if store.stats().pending_events == 0:
                    break
                client.run()
            left = store.stats().pending_events
            conn = sqlite3.connect(path)
            ids = [row[0] for row in conn.execute(
                "SELECT event_id FROM events WHERE uploaded_at IS NOT NULL")]  # fmt: skip
            conn.close()
            with lock:
                acked.extend(ids)
                if left:
                    problems.append(f"{device_id}: {left} events still pending after the drain")
        except Exception as exc:  # reported, never swallowed
            with lock:
                problems.append(f"{device_id}: {exc!r}")
            if not signalled:
                ready.put(device_id)
        finally:
            store.close()

    threads = [threading.Thread(target=device, args=d, daemon=True) for d in spec.devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    Path(spec.out).write_text(json.dumps({"posts": posts, "acked": acked, "problems": problems}))


# --------------------------------------------------------------------------- one run


@dataclass
class RunResult:
    config: str
    repeat: int
    devices: int
    batch: int
    window_s: float
    events: int = 0
    events_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    posts: int = 0
    failed_posts: int = 0
    server_cpu_s: float = 0.0
    db_cpu_s: float = 0.0
    cpu_per_1000: float | None = None
    loadgen_cpu_s: float = 0.0
    machine_busy: float = 0.0
    batches_per_commit: float | None = None
    acknowledged: int = 0
    stored: int = 0
    stored_distinct: int = 0
    lost: int = 0
    duplicated: int = 0
    unacknowledged_stored: int = 0
    problems: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)

    @property
    def exactly_once(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.unacknowledged_stored == 0
            and self.acknowledged == self.stored_distinct
            and not self.problems
        )


def commit_groups(url: str) -> tuple[float, float]:
    """``(writes, groups)`` the server's group commits have made so far (``/metrics``: the
    ``pocketrec_commit_batches`` histogram's sum and count, every worker's summed)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    values = dict.fromkeys(("pocketrec_commit_batches_sum", "pocketrec_commit_batches_count"), 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in values:
            values[name] = float(value)
    return values["pocketrec_commit_batches_sum"], values["pocketrec_commit_batches_count"]


def server_event_ids(config: Config, db: str) -> list[str]:
    """Every stored event id, read with SQL (not through the server's code)."""
    if config.backend == "sqlite":
        conn = sqlite3.connect(db)
        try:
            return [row[0] for row in conn.execute("SELECT event_id FROM events")]
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        ids = [row[0] for row in conn.execute("SELECT event_id::text FROM events")]
        guard = conn.execute("SELECT count(*) FROM event_ids").fetchone()
    if guard is None or guard[0] != len(set(ids)):
        raise RuntimeError(f"event_ids holds {guard} ids for {len(set(ids))} stored events")
    return ids


def run_once(
    config: Config, repeat: int, args: argparse.Namespace, work: Path,
    postgres: Postgres | None, env: dict[str, str],
) -> RunResult:  # fmt: skip
    """One run of ``config`` on a fresh database (module docstring)."""
    folder = work / f"{config.name.replace(' ', '-')}-{repeat}-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True)
    dbname = None
    if config.backend == "sqlite":
        db = str(folder / "server.sqlite")
    else:
        assert postgres is not None
        dbname = f"bench_{uuid.uuid4().hex[:12]}"
        postgres.execute(f"CREATE DATABASE {dbname}")
        db = postgres.uri(dbname)
    result = RunResult(config.name, repeat, args.devices, args.batch, args.duration)
    server = Server(config, db, folder, env)
    stores = Path(tempfile.mkdtemp(prefix="bench-stores-", dir=args.store_dir))
    try:
        tokens = server.register(args.devices)
        server.start()
        context = multiprocessing.get_context("spawn")
        ready, go, stop = context.Queue(), context.Event(), context.Event()
        specs = [
            DeviceSpec(server.url, tokens[p :: args.processes], str(stores), args.batch,
                       args.chunk, args.prefill, str(folder / f"devices-{p}.json"),
                       config.per_request)
            for p in range(args.processes)
        ]  # fmt: skip
        procs = [context.Process(target=device_process, args=(s, ready, go, stop)) for s in specs]
        for proc in procs:
            proc.start()
        for _ in range(args.devices):  # every store filled, every thread waiting for `go`
            ready.get(timeout=600)
        loadgen = [proc.pid for proc in procs if proc.pid is not None]
        go.set()
        time.sleep(args.warmup)

        def sample() -> tuple[float, float, float, float, float, float]:
            assert server.process is not None
            postmaster = (
                postgres.postmaster() if postgres and config.backend == "postgres" else None
            )
            busy, total = machine_busy_seconds()
            return (time.monotonic(), tree_cpu_seconds([server.process.pid]),
                    tree_cpu_seconds([postmaster]) if postmaster else 0.0,
                    tree_cpu_seconds(loadgen), busy, total)  # fmt: skip

        before = sample()
        commits_before = commit_groups(server.url) if config.backend != "baseline" else None
        profilers = []
        if args.profile is not None:  # py-spy on the server and one load process, the window
            args.profile.mkdir(parents=True, exist_ok=True)
            assert server.process is not None
            for what, pid in (("server", server.process.pid), ("loadgen", loadgen[0])):
                out = args.profile / f"{config.name.replace(' ', '-')}-{repeat}-{what}.txt"
                profilers.append(subprocess.Popen(
                    ["py-spy", "record", "--gil", "--subprocesses", "--format", "raw",
                     "--duration", str(int(args.duration)), "--pid", str(pid), "-o", str(out)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        if config.faults:
            time.sleep(args.duration / 3)
            result.faults.append(server.kill_worker())
            if config.backend == "postgres":
                time.sleep(max(0.0, before[0] + 2 * args.duration / 3 - time.monotonic()))
                assert postgres is not None
                result.faults.append(f"pg_ctl restart -m fast ({postgres.restart():.1f} s)")
        time.sleep(max(0.0, before[0] + args.duration - time.monotonic()))
        after = sample()
        if commits_before is not None and not config.faults:  # a restart resets the counts
            (batches, groups), (batches_0, groups_0) = commit_groups(server.url), commits_before
            if groups > groups_0:
                result.batches_per_commit = (batches - batches_0) / (groups - groups_0)
        stop.set()
        for profiler in profilers:
            profiler.wait()
        for proc in procs:
            proc.join()
        outputs = [json.loads(Path(s.out).read_text()) for s in specs]
        server.stop()
        start, end = before[0], after[0]
        result.window_s = end - start
        posts = [p for out in outputs for p in out["posts"]]
        window = [p for p in posts if start <= p[0] < end]
        good = sorted(p[1] for p in window if 200 <= p[2] < 300)
        result.posts = len(window)
        result.failed_posts = len(window) - len(good)
        result.events = sum(p[3] for p in window)
        result.events_per_s = result.events / result.window_s
        if good:
            result.p50_ms = 1000 * good[len(good) // 2]
            result.p99_ms = 1000 * good[min(len(good) - 1, int(len(good) * 0.99))]
        result.server_cpu_s = after[1] - before[1]
        result.db_cpu_s = after[2] - before[2]
        result.loadgen_cpu_s = after[3] - before[3]
        result.machine_busy = (after[4] - before[4]) / max(after[5] - before[5], 1e-9)
        if result.events and not config.faults:  # a restarted process takes its CPU with it
            result.cpu_per_1000 = 1000 * (result.server_cpu_s + result.db_cpu_s) / result.events
        acked = [i for out in outputs for i in out["acked"]]
        stored = server_event_ids(config, db)
        acked_set, stored_set = set(acked), set(stored)
        result.problems = [p for out in outputs for p in out["problems"]]
        result.acknowledged = len(acked_set)
        result.stored, result.stored_distinct = len(stored), len(stored_set)
        result.lost = len(acked_set - stored_set)
        result.duplicated = len(stored) - len(stored_set)
        result.unacknowledged_stored = len(stored_set - acked_set)
        if len(acked) != len(acked_set):
            result.problems.append(f"{len(acked) - len(acked_set)} ids acknowledged twice")
        return result
    finally:
        server.stop()
        shutil.rmtree(stores, ignore_errors=True)
        if dbname is not None and postgres is not None:
            postgres.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- reporting


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(results: list[RunResult], configs: list[Config]) -> list[dict[str, Any]]:
    rows = []
    for config in configs:
        runs = [r for r in results if r.config == config.name]
        rows.append({
            "config": config.name, "backend": config.backend, "workers": config.workers,
            "faults": config.faults, "runs": len(runs),
            "events_per_s": median([r.events_per_s for r in runs]),
            "p50_ms": median([r.p50_ms for r in runs]),
            "p99_ms": median([r.p99_ms for r in runs]),
            "cpu_per_1000": median([r.cpu_per_1000 for r in runs]),
            "server_cpu_per_1000": median(
                [1000 * r.server_cpu_s / r.events if r.events else None for r in runs]),
            "db_cpu_per_1000": median(
                [1000 * r.db_cpu_s / r.events if r.events else None for r in runs]),
            "loadgen_cpu_per_1000": median(
                [1000 * r.loadgen_cpu_s / r.events if r.events else None for r in runs]),
            "machine_busy": median([r.machine_busy for r in runs]),
            "batches_per_commit": median([r.batches_per_commit for r in runs]),
            "lost": sum(r.lost for r in runs),
            "duplicated": sum(r.duplicated for r in runs),
            "exactly_once": all(r.exactly_once for r in runs),
            "acknowledged": sum(r.acknowledged for r in runs),
        })  # fmt: skip
    return rows


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def print_summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    # the reference: the baseline server with the client of its time (a connection per
    # request) when that ran, else the baseline server with this client
    base = next((r for r in rows if r["config"] == "baseline sqlite conn/request"), None) or next(
        (r for r in rows if r["config"] == "baseline sqlite"), None)  # fmt: skip
    print(f"\n{args.devices} devices, {args.batch} events a batch, window {args.duration:g} s, "
          f"medians of {args.repeats} repeats\n")  # fmt: skip
    print("| server | workers | faults | events/s | p50 / p99 ms | CPU s / 1,000 events "
          "(server + db) | load generator CPU s / 1,000 | machine busy | batches / commit "
          "| x baseline events/s | x baseline CPU | lost / duplicated "
          "| exactly once |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        speed = cpu = None
        if base and not row["faults"] and base["events_per_s"]:
            speed = row["events_per_s"] / base["events_per_s"]
            if row["cpu_per_1000"] and base["cpu_per_1000"]:
                cpu = row["cpu_per_1000"] / base["cpu_per_1000"]
        split = ""
        if row["cpu_per_1000"] is not None:
            split = (f" ({fmt(row['server_cpu_per_1000'], '.3f')} + "
                     f"{fmt(row['db_cpu_per_1000'], '.3f')})")  # fmt: skip
        print(f"| {row['config']} | {row['workers']} | {'yes' if row['faults'] else 'no'} | "
              f"{row['events_per_s']:,.0f} | {row['p50_ms']:.0f} / {row['p99_ms']:.0f} | "
              f"{fmt(row['cpu_per_1000'], '.3f')}{split} | "
              f"{fmt(row['loadgen_cpu_per_1000'], '.3f')} | {row['machine_busy']:.0%} | "
              f"{fmt(row['batches_per_commit'], '.1f')} | {fmt(speed, '.2f')} | "
              f"{fmt(cpu, '.2f')} | {row['lost']} / {row['duplicated']} | "
              f"{'yes' if row['exactly_once'] else 'NO'} |")  # fmt: skip


def print_run(r: RunResult) -> None:
    cpu = (
        f"CPU/1000 {fmt(r.cpu_per_1000, '.3f')} (server {r.server_cpu_s:.1f} s, db "
        f"{r.db_cpu_s:.1f} s, load {r.loadgen_cpu_s:.1f} s, machine {r.machine_busy:.0%}, "
        f"{fmt(r.batches_per_commit, '.1f')} batches per commit)"
    )
    if r.faults:  # a killed or restarted process took its CPU time with it
        cpu = f"CPU n/a (load {r.loadgen_cpu_s:.1f} s, machine {r.machine_busy:.0%})"
    print(f"{r.config} #{r.repeat}: {r.events_per_s:,.0f} events/s, p50/p99 {r.p50_ms:.0f}/"
          f"{r.p99_ms:.0f} ms, {r.posts} posts ({r.failed_posts} failed), {cpu}; "
          f"acknowledged {r.acknowledged}, stored "
          f"{r.stored_distinct}/{r.stored}, lost {r.lost}, duplicated {r.duplicated}, "
          f"unacknowledged {r.unacknowledged_stored}; exactly once: {r.exactly_once}"
          + (f"; faults: {'; '.join(r.faults)}" if r.faults else "")
          + (f"; PROBLEMS: {r.problems[:5]}" if r.problems else ""), flush=True)  # fmt: skip


# --------------------------------------------------------------------------- main


def build_configs(args: argparse.Namespace, postgres: Postgres | None) -> list[Config]:
    configs = []
    for name in args.backends.split(","):
        if name == "baseline":
            configs.append(Config("baseline sqlite", "sqlite", baseline=True))
        elif name == "sqlite":
            configs.append(Config("sqlite 1w", "sqlite", 1))
        elif name == "postgres":
            if postgres is None:
                raise SystemExit("postgres needs POCKETREC_TEST_POSTGRES: run under "
                                 "tools/with_postgres.sh")  # fmt: skip
            for workers in [int(w) for w in str(args.workers).split(",")]:
                configs.append(Config(f"postgres {workers}w", "postgres", workers))
        else:
            raise SystemExit(f"unknown backend {name!r} (baseline, sqlite, postgres)")
    modes = args.connections.split(",")
    if not modes or any(m not in ("per-sync", "per-request") for m in modes):
        raise SystemExit(f"--connections: per-sync and/or per-request, got {args.connections!r}")
    configs = [
        Config(c.name + (" conn/request" if mode == "per-request" else ""), c.backend,
               c.workers, c.baseline, per_request=mode == "per-request")
        for c in configs for mode in modes
        # the baseline runs with the client of its time (a connection per request) if that runs
        if not (c.baseline and "per-request" in modes and mode != "per-request")
    ]  # fmt: skip
    if args.faults:
        configs += [Config(f"{c.name} + faults", c.backend, c.workers, c.baseline, True,
                           c.per_request)
                    for c in configs if not c.baseline and not c.per_request]  # fmt: skip
    return configs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200, help="simulated devices")
    parser.add_argument("--batch", type=int, default=25, help="events per upload batch")
    parser.add_argument("--chunk", type=int, default=4,
                        help="batches a device logs between two sync passes")  # fmt: skip
    parser.add_argument("--prefill", type=int, default=1200,
                        help="events each device logs before the run (its backlog)")  # fmt: skip
    parser.add_argument("--duration", type=float, default=15.0, help="measured window, s")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before the window")
    parser.add_argument("--backends", default="baseline,sqlite,postgres",
                        help="comma-separated: baseline, sqlite, postgres")  # fmt: skip
    parser.add_argument("--workers", default="2", help="postgres workers (comma-separated)")
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes")
    parser.add_argument("--connections", default="per-sync",
                        help="the devices' HTTP connections: per-sync (kept alive for a pass, "
                        "the client as it is) and/or per-request (closed after each request, "
                        "the client before keep-alive); comma-separated")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--faults", action="store_true",
                        help="also runs that kill a worker and restart PostgreSQL")  # fmt: skip
    parser.add_argument("--store-dir", default="/dev/shm" if os.access("/dev/shm", os.W_OK)
                        else None, help="where the device stores go")  # fmt: skip
    parser.add_argument("--work-dir", default=None, help="where the server databases go")
    parser.add_argument("--baseline-cache", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "pocketrec-bench" / "baseline")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write every run here")
    parser.add_argument("--keep", action="store_true", help="keep the run folders (logs)")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy (collapsed stacks) of the server and a load process here",
    )
    args = parser.parse_args(argv)
    if args.devices < 1 or args.processes < 1 or args.batch < 1 or args.chunk < 1:
        parser.error("--devices, --processes, --batch and --chunk must be >= 1")
    args.processes = min(args.processes, args.devices)
    return args


def without_packages(folder: Path, names: Sequence[str]) -> Path:
    """A folder that, first on ``PYTHONPATH``, makes ``import <name>`` fail for ``names``
    (uvicorn then runs without them, as it does where they are not installed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.py").write_text(
            f'raise ImportError("{name} is hidden by bench_server.py")\n'
        )
    return folder


def event_loop_of(env: dict[str, str], cwd: Path) -> str:
    """Which event loop uvicorn picks (``loop="auto"``) in ``env``."""
    code = ("from uvicorn.loops.auto import auto_loop_factory; "
            "print(auto_loop_factory()().__class__.__module__.split('.')[0])")  # fmt: skip
    return subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=cwd,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    postgres = Postgres.from_env()
    configs = build_configs(args, postgres)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    hidden = without_packages(args.baseline_cache / "hidden", BASELINE_LACKS)
    envs: dict[str, dict[str, str]] = {c.name: env for c in configs}
    if any(c.baseline for c in configs):
        site = baseline_site(BASELINE_COMMIT, args.baseline_cache)
        for c in configs:
            if c.baseline:
                envs[c.name] = {**env, "PYTHONPATH": os.pathsep.join([str(hidden), str(site)])}
                where = subprocess.run(
                    [sys.executable, "-c", "import pocketrec.server.running as m; "
                     "print(m.__file__)"],
                    env=envs[c.name], check=True, capture_output=True, text=True, cwd=site,
                ).stdout.strip()  # fmt: skip
                if not where.startswith(str(site)):
                    raise SystemExit(f"the baseline would import {where}, not {site}")
        print(f"baseline: commit {BASELINE_COMMIT} from {site}")
    for c in configs:
        print(f"{c.name}: event loop {event_loop_of(envs[c.name], args.baseline_cache)}")
    work = Path(tempfile.mkdtemp(prefix="bench-server-", dir=args.work_dir))
    results: list[RunResult] = []
    try:
        for repeat in range(args.repeats):
            for config in configs:  # interleaved: drift hits every configuration alike
                result = run_once(config, repeat, args, work, postgres, envs[config.name])
                print_run(result)
                results.append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = summarize(results, configs)
    print_summary(rows, args)
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "runs": [asdict(r) | {"exactly_once": r.exactly_once}
                                                  for r in results],
                                         "summary": rows}, indent=1))  # fmt: skip
    return 0 if all(r.exactly_once for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
