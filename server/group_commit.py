"""Group commit for the SQLite server database: one committer thread writes every batch that
arrived while the previous commit was being made durable, in one transaction.

A request hands its write (a function of the write connection) to :meth:`GroupCommitter.submit`
and waits on its own future; no lock is held by the waiting threads. The committer thread takes
everything queued (up to :data:`MAX_GROUP_JOBS` writes and :data:`MAX_GROUP_ROWS` rows), opens one
``BEGIN IMMEDIATE`` transaction, runs each write inside its own ``SAVEPOINT`` (a write that raises
is rolled back alone and its caller gets the exception; the others go on), then ``COMMIT``s once.
With ``synchronous=FULL`` in WAL mode that ``COMMIT`` returns only after the WAL is fsynced, and
only then are the futures resolved: a caller learns its write succeeded only once it is durable,
and a failed ``COMMIT`` fails every write of the group (none of them is acknowledged, none is
stored). While one group's fsync runs (sqlite3 releases the GIL), the next group queues up: under
load the cost of one fsync is shared by every batch that came in meanwhile.

If SQLite rolls the whole transaction back by itself (a full disk, an I/O error), the group stops
at that write and every write of it fails: nothing of a group is stored unless its ``COMMIT``
succeeded.
"""

from __future__ import annotations

import collections
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pocketrec.core.errors import StorageError
from pocketrec.storage.connection import is_busy, storage_error

T = TypeVar("T")
P = TypeVar("P")

MAX_GROUP_JOBS = 512
"""Writes committed together at most (a bound on one transaction's size and latency)."""
MAX_GROUP_ROWS = 20_000
"""Rows (as the submitters count them) committed together at most; a larger write goes alone."""


@dataclass
class Job(Generic[P]):
    """One queued write: what to write (``payload``), how many rows it counts, and the future
    its submitter waits on."""

    payload: P
    rows: int
    future: Future[Any] = field(default_factory=Future)


class CommitQueue(Generic[P]):
    """Writes queued by any thread and taken in groups by one committer thread, which hands each
    group to ``commit`` (that resolves every job's future; a job it leaves unresolved, or all of
    them if it raises, gets the exception). ``on_group(len(group))`` sees every group's size;
    ``close`` calls ``on_close`` once the thread ended.
    Shared by the SQLite (:class:`GroupCommitter`) and PostgreSQL group commits."""

    def __init__(
        self,
        name: str,
        where: str,
        commit: Callable[[list[Job[P]]], None],
        *,
        on_close: Callable[[], None] | None = None,
        on_group: Callable[[int], None] | None = None,
        max_jobs: int = MAX_GROUP_JOBS,
        max_rows: int = MAX_GROUP_ROWS,
    ) -> None:
        self._where = where
        self._commit = commit
        self._on_close = on_close
        self._on_group = on_group
        self.max_jobs = max_jobs
        self.max_rows = max_rows
        self._queue: collections.deque[Job[P]] = collections.deque()
        self._wake = threading.Condition(threading.Lock())
        self._closing = False
        self.groups = 0
        """Groups committed or attempted so far (tests and benchmarks read it)."""
        self.largest_group = 0
        """The most writes one group carried so far."""
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit_nowait(self, payload: P, rows: int = 1) -> Future[Any]:
        """Queue ``payload`` for the next group; its future resolves once that group is
        committed (or failed). Cancelling it succeeds only while the write is still queued
        (then it is never run); once its group has taken it, it commits or fails with the
        group. ``StorageError`` if the queue is closed."""
        job = Job(payload, rows)
        with self._wake:
            if self._closing:
                raise StorageError(f"{self._where}: the storage is closed")
            self._queue.append(job)
            self._wake.notify()
        return job.future

    @property
    def queued(self) -> int:
        """Writes waiting for the next group."""
        with self._wake:
            return len(self._queue)

    def close(self, timeout: float | None = None) -> None:
        """Commit what is queued, then stop the thread and run ``on_close`` (idempotent)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)
        if not self._thread.is_alive() and self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    def _take(self) -> list[Job[P]] | None:
        """The next group (waits for the first write); ``None`` once closed and drained."""
        with self._wake:
            while not self._queue:
                if self._closing:
                    return None
                self._wake.wait()
            group: list[Job[P]] = []
            rows = 0
            while self._queue and len(group) < self.max_jobs:
                if group and rows + self._queue[0].rows > self.max_rows:
                    break
                job = self._queue.popleft()
                if job.future.set_running_or_notify_cancel():  # False: cancelled while queued
                    group.append(job)
                    rows += job.rows
            return group

    def _loop(self) -> None:
        while (group := self._take()) is not None:
            if not group:
                continue
            self.groups += 1
            self.largest_group = max(self.largest_group, len(group))
            if self._on_group is not None:
                self._on_group(len(group))
            try:
                self._commit(group)
            except BaseException as exc:  # a bug here must not leave callers waiting forever
                fail(group, exc)
            else:
                fail(group, StorageError(f"{self._where}: the write was not committed"))


def fail(group: list[Job[Any]], error: BaseException) -> None:
    """Resolve every job of ``group`` that is not resolved yet with ``error``."""
    for job in group:
        if not job.future.done():
            job.future.set_exception(error)


class GroupCommitter:
    """Runs writes on ``conn`` (owned from now on: only the committer thread touches it) in
    shared transactions (module docstring). ``where`` names the file in errors."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        where: str,
        *,
        busy_timeout: float = 5.0,
        on_group: Callable[[int], None] | None = None,
    ) -> None:
        self._conn = conn
        self._where = where
        self.busy_timeout = busy_timeout
        conn.execute("PRAGMA busy_timeout = 0")  # another process's write: polled in _begin
        self._jobs: CommitQueue[Callable[[sqlite3.Connection], Any]] = CommitQueue(
            f"pocketrec-commit {where}", where, self._commit, on_close=conn.close,
            on_group=on_group,
        )  # fmt: skip

    @property
    def groups(self) -> int:
        """Transactions committed or attempted so far (tests and benchmarks read it)."""
        return self._jobs.groups

    @property
    def largest_group(self) -> int:
        """The most writes one transaction carried so far."""
        return self._jobs.largest_group

    def submit(self, work: Callable[[sqlite3.Connection], T], rows: int = 1) -> T:
        """Run ``work(conn)`` in the next group and return its result once that group's
        ``COMMIT`` is durable; re-raise what ``work`` raised (``sqlite3.Error`` as
        ``StorageError``); ``StorageError`` if the commit failed or the committer is closed."""
        result: T = self.submit_nowait(work, rows).result()
        return result

    def submit_nowait(self, work: Callable[[sqlite3.Connection], T], rows: int = 1) -> Future[T]:
        """:meth:`submit` without waiting (see :meth:`CommitQueue.submit_nowait`)."""
        return self._jobs.submit_nowait(work, rows)

    @property
    def queued(self) -> int:
        """Writes waiting for the next group."""
        return self._jobs.queued

    def close(self, timeout: float | None = None) -> None:
        """Commit what is queued, then stop the thread and close the connection (idempotent)."""
        self._jobs.close(timeout)

    def _commit(self, group: list[Job[Callable[[sqlite3.Connection], Any]]]) -> None:
        conn = self._conn
        try:
            self._begin()
        except sqlite3.Error as exc:
            fail(group, storage_error(self._where, exc))
            return
        outcomes: list[tuple[Job[Any], Any, BaseException | None]] = []
        try:
            for job in group:
                conn.execute("SAVEPOINT batch")
                try:
                    result = job.payload(conn)
                except Exception as exc:  # this write alone is rolled back
                    if not conn.in_transaction:  # SQLite rolled everything back by itself
                        raise
                    conn.execute("ROLLBACK TO batch")
                    conn.execute("RELEASE batch")
                    failed: Exception = (
                        storage_error(self._where, exc) if isinstance(exc, sqlite3.Error) else exc
                    )
                    outcomes.append((job, None, failed))
                    continue
                conn.execute("RELEASE batch")
                outcomes.append((job, result, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:  # a failed ROLLBACK: the next BEGIN fails and says why
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            fail(group, storage_error(self._where, exc))
            return
        except BaseException:
            if conn.in_transaction:  # a bug must not wedge every later group's BEGIN
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        for job, value, error in outcomes:
            if error is None:
                job.future.set_result(value)
            else:
                job.future.set_exception(error)

    def _begin(self) -> None:
        """``BEGIN IMMEDIATE``, waiting for another process's write transaction by polling
        every 0.2-5 ms for up to :attr:`busy_timeout` seconds (SQLite's own busy handler sleeps
        1, 2, 5, 10, ... 100 ms: too coarse when processes take turns at every commit)."""
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.0002
        while True:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.005)


__all__ = ["MAX_GROUP_JOBS", "MAX_GROUP_ROWS", "CommitQueue", "GroupCommitter", "Job", "fail"]
