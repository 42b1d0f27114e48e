"""Group commit of the SQLite server database (``pocketrec.server.group_commit``), on real files:
concurrent overlapping resends, batches sharing one transaction, a failing batch inside a group,
reads while a commit is in progress, and power loss (``tools/powerloss.py``'s VFS shim) at every
kind of write and sync of a group commit: no acknowledged batch is lost, no batch is half there.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tool_modules import TOOLS, load_tool

from pocketrec.core.errors import StorageError
from pocketrec.server import BundleRecord
from pocketrec.server.group_commit import GroupCommitter
from pocketrec.server.storage_sqlite import SqliteFeedbackStorage
from pocketrec.server.validation import EventRecord

powerloss = load_tool("powerloss")
crash_workload = load_tool("crash_workload")


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[SqliteFeedbackStorage]:
    opened = SqliteFeedbackStorage(tmp_path / "server.sqlite")
    try:
        yield opened
    finally:
        opened.close()


def make_events(count: int, *, user: str = "alice") -> list[EventRecord]:
    return [
        EventRecord(str(uuid.uuid4()), k + 1, user, f"i{k:05d}", "click", 1_700_000_000.5 + k,
                    None)
        for k in range(count)
    ]  # fmt: skip


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


class HeldCommit:
    """Keeps the committer busy inside a transaction (a write that waits on a gate), so that the
    writes submitted meanwhile queue up for the next group."""

    def __init__(self, storage: SqliteFeedbackStorage) -> None:
        self.started, self.gate = threading.Event(), threading.Event()

        def hold(conn: sqlite3.Connection) -> None:
            self.started.set()
            assert self.gate.wait(60)

        self.thread = threading.Thread(target=storage.committer.submit, args=(hold,))
        self.thread.start()
        assert self.started.wait(30)

    def release(self) -> None:
        self.gate.set()
        self.thread.join(30)


def in_threads(calls: list[Callable[[], Any]]) -> tuple[list[threading.Thread], list[Any]]:
    """Start one thread per call; ``results[i]`` gets call i's value or the exception it raised."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    return threads, results


def test_concurrent_overlapping_resends_store_each_id_once_and_count_it_new_once(
    storage: SqliteFeedbackStorage,
) -> None:
    events = make_events(1000)
    batches = [events[i : i + 25] for i in range(0, len(events), 25)]

    def resend(seed: int) -> int:
        rng = random.Random(seed)
        new = 0
        for batch in rng.sample(batches, len(batches)):
            new += storage.insert_events("phone", [*batch, *rng.sample(events, 10)])
        return new

    threads, results = in_threads([lambda s=seed: resend(s) for seed in range(12)])
    for thread in threads:
        thread.join(120)
    assert all(isinstance(r, int) for r in results), results
    assert sum(results) == 1000  # each event was new in exactly one reply
    conn = sqlite3.connect(storage.path)
    total, distinct = conn.execute(
        "SELECT count(*), count(DISTINCT event_id) FROM events"
    ).fetchone()
    conn.close()
    assert (total, distinct) == (1000, 1000)


def test_batches_queued_during_a_commit_share_the_next_transaction(
    storage: SqliteFeedbackStorage,
) -> None:
    batches = [make_events(25, user=f"u{i}") for i in range(20)]
    held = HeldCommit(storage)
    groups_before = storage.committer.groups
    threads, results = in_threads([lambda b=b: storage.insert_events("phone", b) for b in batches])
    wait_until(lambda: storage.committer.queued == 20, "20 queued batches")
    assert storage.count_events() == 0  # nothing is visible before the commit
    held.release()
    for thread in threads:
        thread.join(30)
    assert results == [25] * 20
    assert storage.committer.groups == groups_before + 1  # one transaction, one fsync
    assert storage.committer.largest_group == 20
    assert storage.count_events() == 500


def test_a_failing_batch_in_a_group_is_rolled_back_alone(storage: SqliteFeedbackStorage) -> None:
    first, last = make_events(25, user="first"), make_events(25, user="last")
    overflow = EventRecord(str(uuid.uuid4()), 2**63, "bad", "i9", "click", 1.0, None)  # no int64
    bad = [*make_events(10, user="bad"), overflow, *make_events(5, user="bad")]
    storage.record_bundle(BundleRecord(3, "0" * 64, b"s" * 64, 1.0))
    held = HeldCommit(storage)
    calls: list[Callable[[], Any]] = [
        lambda: storage.insert_events("phone", first),
        lambda: storage.insert_events("phone", bad),
        lambda: storage.record_bundle(BundleRecord(2, "1" * 64, b"s" * 64, 2.0)),  # not newer
        lambda: storage.insert_events("phone", last),
    ]
    threads, results = [], []
    for call in calls:  # queued in this order, all in one group
        started, outcome = in_threads([call])
        threads += started
        results.append(outcome)
        queued = len(threads)
        wait_until(lambda n=queued: storage.committer.queued == n, "queued")
    groups_before = storage.committer.groups
    held.release()
    for thread in threads:
        thread.join(30)
    assert storage.committer.groups == groups_before + 1
    assert results[0] == [25]
    assert results[3] == [25]
    assert isinstance(results[1][0], (OverflowError, StorageError)), results[1]
    assert isinstance(results[2][0], ValueError), results[2]
    users = {e.user_id for e in storage.iter_events()}
    assert users == {"first", "last"}  # none of the failing batch's ten first rows
    assert storage.count_events() == 50
    latest = storage.latest_bundle()
    assert latest is not None
    assert latest.model_version == 3
    assert storage.insert_events("phone", bad[:10]) == 10  # its ids were not left claimed


class Escaped(BaseException):
    """Not an ``Exception``: gets past the per-write ``SAVEPOINT`` handling, as a bug would."""


def test_a_write_escaping_the_savepoint_fails_its_group_and_the_next_group_still_commits(
    tmp_path: Path,
) -> None:
    conn = sqlite3.connect(tmp_path / "g.sqlite", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (x INTEGER)")
    committer = GroupCommitter(conn, "g.sqlite")

    def escaping(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t VALUES (1)")
        raise Escaped

    try:
        with pytest.raises(Escaped):
            committer.submit(escaping)
        committer.submit(lambda c: c.execute("INSERT INTO t VALUES (2)"))
    finally:
        committer.close(10)
    check = sqlite3.connect(tmp_path / "g.sqlite")
    assert check.execute("SELECT x FROM t").fetchall() == [(2,)]  # the escaped write rolled back
    check.close()


def test_reads_do_not_wait_for_a_commit_in_progress(storage: SqliteFeedbackStorage) -> None:
    token = storage.add_device("phone")
    storage.insert_events("phone", make_events(3))
    held = HeldCommit(storage)  # a write transaction is open (as while its fsync runs)
    try:
        threads, results = in_threads(
            [lambda: storage.authenticate(token), storage.count_events, storage.ping]
        )
        for thread in threads:
            thread.join(10)
        assert results == ["phone", 3, None]
    finally:
        held.release()


def test_a_closed_storage_refuses_writes_and_reads(tmp_path: Path) -> None:
    storage = SqliteFeedbackStorage(tmp_path / "server.sqlite")
    storage.insert_events("phone", make_events(2))
    storage.close()
    storage.close()
    with pytest.raises(StorageError, match="closed"):
        storage.insert_events("phone", make_events(1))
    with pytest.raises(StorageError, match="closed"):
        storage.count_events()
    reopened = SqliteFeedbackStorage(tmp_path / "server.sqlite")
    assert reopened.count_events() == 2
    reopened.close()


# ----------------------------------------------------------------------------- power loss

WRITERS = 6
BATCH = 7
MAX_OPS = 160
"""Crash points are drawn from the first this-many writes/syncs/truncates of the intake (a group
commit is a few WAL writes and one sync)."""


def crash_child(shim: str, path: str, crash_at: int, torn: bool, off: bool) -> None:
    """The body of :func:`crash_intake`'s child process: acknowledgements go to stdout."""
    loaded = powerloss.Shim(Path(shim))
    storage = SqliteFeedbackStorage(path)
    if off:
        storage.committer.submit(lambda c: None)  # the thread is idle between groups
        # the safety level cannot change inside the committer's transactions: set it on the
        # write connection directly while the committer thread waits for work
        storage._writer._conn.execute("PRAGMA synchronous = OFF")
    ack = crash_workload.pipe_writer(1)
    loaded.arm(crash_at, seed=crash_at, torn=torn, report_fd=1)

    def write(writer: int) -> None:
        for n in range(10_000):
            tag = f"w{writer}-{n}"
            assert storage.insert_events("phone", make_events(BATCH, user=tag)) == BATCH
            ack(f"A {tag}")

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ack(f"F never crashed after {loaded.ops()} counted operations")


def crash_intake(shim: Path, path: Path, crash_at: int, *, torn: bool, off: bool) -> set[str]:
    """A child process (the shim loaded) runs the server storage with :data:`WRITERS` threads
    inserting batches of :data:`BATCH` events, each batch's events under one user id (its tag);
    a thread writes ``A <tag>`` to stdout after ``insert_events`` returned. Power fails at the
    ``crash_at``-th counted operation. ``off``: the write connection runs ``synchronous=OFF``
    (the harness must then see losses). Returns the acknowledged tags.

    The child is a fresh interpreter, not a fork of pytest: once TensorFlow is imported (the
    converter's tests do it in this process), its embedded copy of SQLite would take the shim's
    calls, and the shim would never see Python's connections."""
    code = (
        "import sys; sys.path[:0] = sys.argv[1:3]; import test_server_group_commit as t; "
        "t.crash_child(sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6] == '1', "
        "sys.argv[7] == '1')"
    )
    tests = str(Path(__file__).resolve().parent)
    child = subprocess.run(
        [sys.executable, "-c", code, tests, str(TOOLS), str(shim), str(path), str(crash_at),
         str(int(torn)), str(int(off))],
        stdout=subprocess.PIPE, timeout=300, check=False,
    )  # fmt: skip
    lines = crash_workload.read_lines(child.stdout)
    assert child.returncode == powerloss.CRASH_EXIT, (child.returncode, lines[-1:])
    assert sum(1 for line in lines if line[0] == "C") == 1, lines[-3:]
    return {line[1] for line in lines if line[0] == "A"}


def stored_batches(path: Path, scratch: Path) -> dict[str, int]:
    """Per tag, how many of its events a copy of the crashed files holds (integrity checked)."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    for suffix in ("", "-wal"):
        if Path(f"{path}{suffix}").exists():
            shutil.copyfile(f"{path}{suffix}", scratch / f"copy{suffix}")
    conn = sqlite3.connect(scratch / "copy")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return dict(conn.execute("SELECT user_id, count(*) FROM events GROUP BY user_id"))
    finally:
        conn.close()


def power_loss_rounds(
    shim: Path, folder: Path, points: int, *, off: bool = False, seed: int = 0
) -> tuple[int, int, int]:
    """Run ``points`` crash rounds, each on a new database; returns (acknowledged batches,
    acknowledged batches lost, batches found incomplete), summed over the rounds."""
    rng = random.Random(seed)
    acknowledged = lost = partial = 0
    for round_ in range(points):
        path = folder / f"server-{round_}.sqlite"
        SqliteFeedbackStorage(path).close()  # created and migrated before the power can fail
        acked = crash_intake(shim, path, rng.randint(1, MAX_OPS), torn=rng.random() < 0.5, off=off)
        found = stored_batches(path, folder / "scratch")
        acknowledged += len(acked)
        lost += sum(1 for tag in acked if found.get(tag, 0) != BATCH)
        partial += sum(1 for count in found.values() if count != BATCH)
    return acknowledged, lost, partial


@pytest.mark.slow
def test_power_loss_never_loses_an_acknowledged_batch_nor_leaves_half_of_one(
    tmp_path: Path, shim: Path
) -> None:
    acknowledged, lost, partial = power_loss_rounds(shim, tmp_path, 30)
    assert acknowledged > 0
    assert (lost, partial) == (0, 0)


@pytest.mark.slow
def test_the_power_loss_harness_sees_losses_without_the_fsync(tmp_path: Path, shim: Path) -> None:
    _acknowledged, lost, partial = power_loss_rounds(shim, tmp_path, 8, off=True, seed=1)
    assert lost > 0  # synchronous=OFF acknowledges before anything is durable
    assert partial == 0  # a transaction still never shows half


def test_a_batch_cancelled_while_queued_is_never_written(storage: SqliteFeedbackStorage) -> None:
    held = HeldCommit(storage)
    cancelled = storage.submit_events("phone", make_events(5, user="gone"))
    kept = storage.submit_events("phone", make_events(5, user="kept"))
    assert cancelled.cancel()  # still queued
    held.release()
    assert kept.result(30) == 5
    assert {e.user_id for e in storage.iter_events()} == {"kept"}
    started = storage.submit_events("phone", make_events(5, user="late"))
    assert started.result(30) == 5
    assert not started.cancel()  # done: a committed batch cannot be taken back
