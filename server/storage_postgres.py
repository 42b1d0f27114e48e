"""PostgreSQL :class:`~pocketrec.server.storage.FeedbackStorage` (extra ``postgres``: psycopg 3
and psycopg-pool). The schema, its partitions and the exactly-once design are described in
``pocketrec.server.postgres_schema``.

Connections come from a pool (autocommit; multi-statement writes open explicit transactions).
Intake is a group commit: a batch that travels as JSON with the server's clock goes to this
process's intake thread (:meth:`PostgresFeedbackStorage.submit_events`; the server awaits its
future), which takes all the batches queued meanwhile and writes them in one statement, one
transaction and one WAL flush, answering each batch's count of new events (if that statement
fails for another reason than an unreachable database, each batch is written alone, so that a
bad batch fails alone); under load one statement carries the batches of many requests. Other
batches (COPYed, ``unnest``, an explicit ``received_at``) run alone in the process's thread pool,
concurrently, on pooled connections. Intake runs one insert statement (the ``event_ids`` guard
and the events insert in one CTE), fed one of three ways: ``json``, the batches as one JSON text
parameter unpacked by ``json_array_elements`` in that statement alone (they commit whole or not
at all without a ``BEGIN``/``COMMIT`` round trip); ``unnest``, the same with seven arrays
(psycopg dumps arrays in Python: more CPU on the server); or ``copy``, the batch COPYed into a
per-connection temporary table and the same insert run from it, in one transaction. ``auto``
(the default) sends batches below :data:`COPY_MIN_EVENTS` events as JSON and COPYs larger ones
(``bench/bench_server_storage.py`` measures all three). A batch whose day
partition is missing (clock past the partitions made ahead, or an explicit ``received_at``)
creates it and is retried; a deadlock between two batches sharing ids (both insert their ids in
the same order, so it should not happen) is retried too. Streaming reads use a server-side
cursor.

Retention drops whole day partitions (``DETACH PARTITION … CONCURRENTLY``, which waits for
readers of ``events`` such as a running export but never blocks inserts, then ``DROP TABLE``),
deletes the rest before the cutoff from the boundary partition, and then forgets the dropped
events' ids in ``event_ids``. A crash in between is finished by the next run (pending detaches are
finalized, detached partitions dropped).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, Literal, NamedTuple, TypeVar

import orjson
import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from pocketrec.core.errors import StorageError
from pocketrec.server import postgres_schema as schema
from pocketrec.server.auth import hash_token, new_token
from pocketrec.server.blocking import executor
from pocketrec.server.group_commit import CommitQueue, Job, fail
from pocketrec.server.metrics import server_metrics
from pocketrec.server.migrations import Step, migrate
from pocketrec.server.storage import (
    BundleRecord,
    Device,
    Retention,
    StorageUnavailableError,
    StoredEvent,
    check_device_id,
)
from pocketrec.server.validation import EventRecord

Intake = Literal["auto", "json", "unnest", "copy"]
T = TypeVar("T")
log = logging.getLogger("pocketrec.server")

COPY_MIN_EVENTS = 500
"""``intake="auto"`` COPYs batches of at least this many events and sends smaller ones as JSON
(``bench/bench_server_storage.py``, medians of 3, 10,000 events, 1/4 threads: JSON 1.4-1.5x
arrays at 25 and 100 events and 1.1-1.3x COPY at 100; at 500 JSON and COPY within noise)."""

DDL_LOCK_TIMEOUT = "5s"
"""How long partition DDL waits for its lock on ``events`` before giving up."""
_STREAM_ROWS = 2000
"""Rows the server-side cursor fetches per round trip."""
_RETRIES = 3
"""Attempts of a batch whose partition was missing or that hit a deadlock."""

_EVENT_COLUMNS = (
    "event_id::text, device_id, seq, user_id, item_id, event_type, ts, context, "
    "extract(epoch FROM received_at)::float8"
)
_STAGING = "pocketrec_staging"

# The guard and the insert in one statement over one or more batches; {batch} is the rows with
# their batch's device, its number ``part`` in the group and their ordinal ``ord`` in the batch.
# The ids go into event_ids sorted (two statements sharing ids lock them in the same order), the
# events in their order (arrival order); an id repeated in the group keeps its first occurrence
# (the earlier batch's). The statement answers each batch's count of new events.
_INSERT = """
WITH batch AS (
    SELECT DISTINCT ON (event_id) * FROM {batch} ORDER BY event_id, part, ord
), clock AS (
    SELECT coalesce(to_timestamp(%(at)s::float8), now()) AS at
), fresh AS (
    INSERT INTO event_ids (event_id, received_at)
    SELECT event_id, clock.at FROM batch, clock ORDER BY event_id
    ON CONFLICT DO NOTHING
    RETURNING event_id
), stored AS (
    INSERT INTO events (received_at, event_id, device_id, seq, user_id, item_id, event_type,
                        ts, context)
    SELECT clock.at, b.event_id, b.device_id, b.seq, b.user_id, b.item_id, b.event_type, b.ts,
           b.context
    FROM batch b JOIN fresh USING (event_id), clock
    ORDER BY b.part, b.ord
)
SELECT b.part, count(*) FROM batch b JOIN fresh USING (event_id) GROUP BY b.part
"""
_UNNEST = """(SELECT *, %(device)s::text AS device_id, 1::bigint AS part
        FROM unnest(%(ids)s::uuid[], %(seqs)s::int8[], %(users)s::text[], %(items)s::text[],
                    %(types)s::text[], %(ts)s::float8[], %(contexts)s::text[]) WITH ORDINALITY
             AS u(event_id, seq, user_id, item_id, event_type, ts, context, ord)) AS b"""
_JSON_ROWS = """(SELECT (r->>0)::uuid AS event_id, (r->>1)::int8 AS seq, r->>2 AS user_id,
               r->>3 AS item_id, r->>4 AS event_type, (r->>5)::float8 AS ts, r->>6 AS context,
               (%(devices)s::text[])[g.part] AS device_id, g.part, t.ord
        FROM json_array_elements(%(batches)s::json) WITH ORDINALITY AS g(batch, part),
             json_array_elements(g.batch) WITH ORDINALITY AS t(r, ord)) AS b"""
"""One or more batches as one JSON parameter, an array of batches, each an array of rows, each
row an ``EventRecord``'s field array (orjson writes it ten times faster than the json module
writes objects; floats in their shortest exact form); their devices as a text array. Nothing is
read from a batch's JSON per row (a ``json`` value is parsed again by every ``->``: a device
read from the batch per row made a group of 16 batches of 500 events 0.19 CPU s per 1,000
events in PostgreSQL instead of ~0.02)."""
_STAGED = f"""(SELECT *, %(device)s::text AS device_id, 1::bigint AS part
        FROM {_STAGING}) AS b"""
_INSERT_JSON = _INSERT.format(batch=_JSON_ROWS)
_INSERT_UNNEST = _INSERT.format(batch=_UNNEST)
_INSERT_STAGED = _INSERT.format(batch=_STAGED)
_CREATE_STAGING = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING} (
    ord bigint, event_id uuid, seq bigint, user_id text, item_id text, event_type text,
    ts float8, context text
) ON COMMIT DELETE ROWS
"""


def describe(dsn: str) -> str:
    """``dsn`` for messages: database, user and host, never the password."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"not a valid PostgreSQL URI ({exc})") from None
    host = info.get("host") or "localhost"
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql database {info.get('dbname') or '?'!s} on {host}{port}"


class PostgresFeedbackStorage:
    """:class:`~pocketrec.server.storage.FeedbackStorage` in a PostgreSQL database."""

    def __init__(
        self,
        dsn: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        timeout: float = 30.0,
        intake: Intake = "auto",
        ahead_days: int = schema.AHEAD_DAYS,
        steps: Sequence[Step] = schema.STEPS,
    ) -> None:
        """Connect to ``dsn`` (``postgresql://…``), migrate the schema and create the day
        partitions from yesterday to ``ahead_days`` after today (UTC). ``timeout``: seconds to
        wait for the first connection and, later, for a free pooled connection. ``steps``: the
        schema's migrations (tests pass more to stand for a newer build). Raises
        ``StorageUnavailableError`` when the database cannot be reached, ``SchemaTooNewError``
        for a schema of a newer pocketrec and ``StorageError`` for a schema that is not ours."""
        if intake not in ("auto", "json", "unnest", "copy"):
            raise ValueError(f"intake must be 'auto', 'json', 'unnest' or 'copy', got {intake!r}")
        if not 1 <= min_connections <= max_connections:
            raise ValueError("need 1 <= min_connections <= max_connections")
        self.where = describe(dsn)
        self.intake = intake
        self.ahead_days = ahead_days
        self._ensured_through = dt.date.min
        self._next_ahead_attempt = 0.0  # time.monotonic() of the next _keep_ahead try
        self._ensure_lock = threading.Lock()
        self._pool = psycopg_pool.ConnectionPool(
            dsn,
            min_size=min_connections,
            max_size=max_connections,
            timeout=timeout,
            kwargs={"autocommit": True, "application_name": "pocketrec-server"},
            configure=self._configure if intake in ("auto", "copy") else None,
            open=False,
            name="pocketrec",
        )
        try:
            with self._errors():
                self._pool.open(wait=True, timeout=timeout)
            with self._connection() as conn:
                migrate(_Migration(conn, self.where), steps)
            self.ensure_partitions()
        except BaseException:
            self._pool.close()
            raise
        self._intake: CommitQueue[_Batch] = CommitQueue(
            f"pocketrec-intake {self.where}", self.where, self._write_group,
            on_group=server_metrics().commit_batches.observe,
        )  # fmt: skip

    # ------------------------------------------------------------------ partitions

    def ensure_partitions(self, first: dt.date | None = None, last: dt.date | None = None) -> int:
        """Create the missing day partitions from ``first`` to ``last`` (default: yesterday to
        ``ahead_days`` after today, by the database's UTC clock); returns how many were
        created. Safe to call from several processes at once."""
        default_range = first is None and last is None
        with self._connection() as conn:
            if first is None or last is None:
                row = conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()
                assert row is not None
                today: dt.date = row[0]
                first = first or today - dt.timedelta(days=1)
                last = last or today + dt.timedelta(days=self.ahead_days)
            created = 0
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (DDL_LOCK_TIMEOUT,))
                conn.execute(schema.LOCK_PARTITIONS, (schema.PARTITION_LOCK,))
                attached = {name for name, _pending in _partitions(conn)}
                for day in schema.days(first, last):
                    name = schema.partition_name(day)
                    if name in attached:
                        continue
                    table = sql.Identifier(name)
                    conn.execute(
                        sql.SQL("CREATE TABLE {} (LIKE events INCLUDING DEFAULTS)").format(table)
                    )
                    conn.execute(
                        sql.SQL(
                            "ALTER TABLE events ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
                        ).format(
                            table,
                            sql.Literal(schema.day_start(day)),
                            sql.Literal(schema.day_start(day + dt.timedelta(days=1))),
                        )
                    )
                    created += 1
        if default_range:
            with self._ensure_lock:
                self._ensured_through = max(self._ensured_through, last)
        return created

    def partitions(self) -> list[str]:
        """The names of ``events``' attached partitions, oldest first."""
        with self._connection() as conn:
            return sorted(name for name, _pending in _partitions(conn))

    def _keep_ahead(self) -> None:
        """Create the coming days' partitions in time, by this host's clock (the on-demand path
        in :meth:`insert_events` covers a skewed clock). Best effort and at most once a minute
        when it fails (say, retention's detach holds the lock while an export runs): intake does
        not wait on it while the partitions it needs exist."""
        today = dt.datetime.now(dt.timezone.utc).date()
        if today + dt.timedelta(days=2) <= self._ensured_through:
            return
        now = time.monotonic()
        with self._ensure_lock:
            if now < self._next_ahead_attempt:
                return
            self._next_ahead_attempt = now + 60.0
        try:
            self.ensure_partitions()
        except StorageError as exc:
            log.warning("could not create the coming days' partitions (will retry): %s", exc)

    # ------------------------------------------------------------------ devices

    def add_device(self, device_id: str) -> str:
        """See :meth:`FeedbackStorage.add_device`."""
        check_device_id(device_id)
        token = new_token()
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO devices (device_id, token_sha256) VALUES (%s, %s) "
                "ON CONFLICT (device_id) DO UPDATE SET token_sha256 = excluded.token_sha256, "
                "revoked = false, revoked_at = NULL",
                (device_id, hash_token(token)),
            )
        return token

    def revoke_device(self, device_id: str) -> bool:
        """See :meth:`FeedbackStorage.revoke_device`."""
        with self._connection() as conn:
            cursor = conn.execute(
                "UPDATE devices SET revoked = true, revoked_at = now() WHERE device_id = %s",
                (device_id,),
            )
            return cursor.rowcount > 0

    def devices(self) -> list[Device]:
        """See :meth:`FeedbackStorage.devices`."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT device_id, revoked, extract(epoch FROM created_at)::float8, "
                "extract(epoch FROM revoked_at)::float8 FROM devices ORDER BY device_id"
            ).fetchall()
        return [Device(*row) for row in rows]

    def authenticate(self, token: str) -> str | None:
        """See :meth:`FeedbackStorage.authenticate`."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT device_id FROM devices WHERE token_sha256 = %s AND NOT revoked",
                (hash_token(token),),
            ).fetchone()
        return None if row is None else str(row[0])

    # ------------------------------------------------------------------ events

    def insert_events(
        self, device_id: str, events: Sequence[EventRecord], *, received_at: float | None = None
    ) -> int:
        """See :meth:`FeedbackStorage.insert_events` (through :meth:`submit_events`)."""
        return int(self.submit_events(device_id, events, received_at=received_at).result())

    def submit_events(
        self, device_id: str, events: Sequence[EventRecord], *, received_at: float | None = None
    ) -> Future[int]:
        """:meth:`insert_events` without blocking: a batch that travels as JSON with the
        server's clock is queued for this process's intake thread, which writes every batch
        queued meanwhile in one statement (module docstring); any other (COPY, ``unnest``, an
        explicit ``received_at``) runs alone in the process's thread pool, on a pooled connection
        of its own. The future resolves to the count of new events once the batch is committed,
        or raises as :meth:`insert_events` does."""
        if not events:
            done: Future[int] = Future()
            done.set_result(0)
            return done
        batch = _Batch(device_id, events, received_at)
        if self._joins(batch):
            return self._intake.submit_nowait(batch, len(events))
        return executor().submit(self._insert_one, batch)

    def _write_group(self, group: list[Job[_Batch]]) -> None:
        """The intake thread's work: the group's batches in one statement; each alone if that
        statement fails for another reason than the database being unreachable, so that one
        bad batch fails alone."""
        if len(group) == 1:
            self._insert_alone(group[0])
            return
        batches = [(job.payload.device_id, job.payload.events) for job in group]
        try:
            counts = self._retrying(lambda conn: _new_counts(conn, batches, None), None)
        except StorageUnavailableError as exc:
            fail(group, exc)
        except StorageError:
            for job in group:
                self._insert_alone(job)
        else:
            for job, count in zip(group, counts, strict=True):
                job.future.set_result(count)

    def _joins(self, batch: _Batch) -> bool:
        """``batch`` can share a statement with others (JSON intake, the server's clock)."""
        return (
            batch.received_at is None
            and self.intake != "unnest"
            and not self._copies(len(batch.events))
        )

    def _copies(self, events: int) -> bool:
        """A batch of ``events`` events is COPYed (``intake``, :data:`COPY_MIN_EVENTS`)."""
        return self.intake == "copy" or (self.intake == "auto" and events >= COPY_MIN_EVENTS)

    def _insert_alone(self, job: Job[_Batch]) -> None:
        """Write ``job``'s batch in a statement of its own and settle its future."""
        try:
            new = self._insert_one(job.payload)
        except Exception as exc:
            job.future.set_exception(exc)
        else:
            job.future.set_result(new)

    def _insert_one(self, batch: _Batch) -> int:
        """Write ``batch`` in a statement of its own; its count of new events."""
        return self._retrying(
            lambda conn: self._insert(conn, batch.device_id, batch.events, batch.received_at),
            batch.received_at,
        )

    def _retrying(
        self, write: Callable[[psycopg.Connection[Any]], T], received_at: float | None
    ) -> T:
        """``write(conn)`` on a pooled connection; a missing day partition is created and a
        deadlock retried, up to :data:`_RETRIES` attempts."""
        self._keep_ahead()
        retried = (pg_errors.CheckViolation, pg_errors.DeadlockDetected)
        for attempt in range(_RETRIES):
            try:
                with self._connection(keep=retried) as conn:
                    return write(conn)
            except pg_errors.CheckViolation as exc:
                if exc.diag.constraint_name is not None or attempt == _RETRIES - 1:
                    raise StorageError(f"{self.where}: {exc}") from exc
                self._add_missing_partition(received_at)
            except pg_errors.DeadlockDetected as exc:
                if attempt == _RETRIES - 1:
                    raise StorageError(f"{self.where}: {exc}") from exc
        raise AssertionError("unreachable")

    def _insert(
        self,
        conn: psycopg.Connection[Any],
        device_id: str,
        events: Sequence[EventRecord],
        received_at: float | None,
    ) -> int:
        if not self._copies(len(events)) and self.intake != "unnest":  # one JSON parameter
            return _new_counts(conn, [(device_id, events)], received_at)[0]
        params: dict[str, Any] = {"at": received_at, "device": device_id}
        if not self._copies(len(events)):
            params.update(
                ids=[e.event_id for e in events],
                seqs=[e.seq for e in events],
                users=[e.user_id for e in events],
                items=[e.item_id for e in events],
                types=[e.event_type for e in events],
                ts=[e.timestamp for e in events],
                contexts=[e.context for e in events],
            )
            return _count(conn.execute(_INSERT_UNNEST, params).fetchall())
        with conn.transaction(), conn.cursor() as cursor:
            with cursor.copy(
                f"COPY {_STAGING} (ord, event_id, seq, user_id, item_id, event_type, ts, "
                "context) FROM STDIN"
            ) as copy:
                for ord_, e in enumerate(events, 1):
                    copy.write_row(
                        (ord_, e.event_id, e.seq, e.user_id, e.item_id, e.event_type,
                         e.timestamp, e.context)
                    )  # fmt: skip
            cursor.execute(_INSERT_STAGED, params)
            return _count(cursor.fetchall())

    def _add_missing_partition(self, received_at: float | None) -> None:
        """Create the partition a batch needed: the day of ``received_at``, or (by the
        database's clock) yesterday to ``ahead_days`` after today."""
        if received_at is None:
            self.ensure_partitions()
            return
        day = schema.utc_day(received_at)
        self.ensure_partitions(day, day)

    def iter_events(self) -> Iterator[StoredEvent]:
        """See :meth:`FeedbackStorage.iter_events` (a server-side cursor)."""
        return self._stream(f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY id", ())

    def export_events(self, device_id: str, user_id: str | None = None) -> Iterator[StoredEvent]:
        """See :meth:`FeedbackStorage.export_events`."""
        where, params = _owner(device_id, user_id)
        return self._stream(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE {where} ORDER BY id", params
        )

    def count_events(self) -> int:
        """See :meth:`FeedbackStorage.count_events`."""
        with self._connection() as conn:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
        assert row is not None
        return int(row[0])

    def erase_events(self, device_id: str, user_id: str | None = None) -> int:
        """See :meth:`FeedbackStorage.erase_events` (the events and their ids, one statement)."""
        where, params = _owner(device_id, user_id)
        with self._connection() as conn:
            row = conn.execute(
                f"WITH gone AS (DELETE FROM events WHERE {where} RETURNING event_id), "
                "forgotten AS (DELETE FROM event_ids WHERE event_id IN "
                "(SELECT event_id FROM gone)) SELECT count(*) FROM gone",
                params,
            ).fetchone()
        assert row is not None
        return int(row[0])

    def drop_events_before(self, cutoff_seconds: float) -> Retention:
        """See :meth:`FeedbackStorage.drop_events_before`: whole day partitions before
        ``cutoff_seconds`` are detached and dropped, the boundary partition's older rows
        deleted, then the dropped events' ids are forgotten."""
        cutoff_at = _at(cutoff_seconds)
        dropped = events = 0
        with self._connection() as conn:
            for name, pending in _partitions(conn):
                day = schema.partition_day(name)
                if day is None or schema.day_start(day + dt.timedelta(days=1)) > cutoff_at:
                    continue
                # FINALIZE: an earlier run was interrupted mid-detach
                how = sql.SQL("FINALIZE" if pending else "CONCURRENTLY")
                conn.execute(
                    sql.SQL("ALTER TABLE events DETACH PARTITION {} {}").format(
                        sql.Identifier(name), how
                    )
                )
            # detached partitions (now, or by a run that crashed before dropping them)
            for name in _detached(conn):
                day = schema.partition_day(name)
                if day is None or schema.day_start(day + dt.timedelta(days=1)) > cutoff_at:
                    continue
                with conn.transaction():
                    row = conn.execute(
                        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))
                    ).fetchone()
                    assert row is not None
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                events += int(row[0])
                dropped += 1
            with conn.transaction():
                events += conn.execute(
                    "DELETE FROM events WHERE received_at < to_timestamp(%s::float8)",
                    (cutoff_seconds,),
                ).rowcount
                conn.execute(
                    "DELETE FROM event_ids WHERE received_at < to_timestamp(%s::float8)",
                    (cutoff_seconds,),
                )
        return Retention(events=events, partitions=dropped)

    # ------------------------------------------------------------------ bundles

    def record_bundle(self, bundle: BundleRecord) -> None:
        """See :meth:`FeedbackStorage.record_bundle`."""
        with self._connection() as conn, conn.transaction():
            conn.execute("LOCK TABLE bundles IN EXCLUSIVE MODE")
            row = conn.execute("SELECT max(model_version) FROM bundles").fetchone()
            latest = None if row is None else row[0]
            if latest is not None and bundle.model_version <= latest:
                raise ValueError(
                    f"model_version {bundle.model_version} is not newer than the latest "
                    f"published {latest}; model versions only go up"
                )
            conn.execute(
                "INSERT INTO bundles (model_version, manifest_sha256, signature, published_at) "
                "VALUES (%s, %s, %s, to_timestamp(%s::float8))",
                (bundle.model_version, bundle.manifest_sha256, bundle.signature,
                 bundle.published_at),
            )  # fmt: skip

    def bundle(self, model_version: int) -> BundleRecord | None:
        """See :meth:`FeedbackStorage.bundle`."""
        return self._one_bundle("WHERE model_version = %s", (model_version,))

    def latest_bundle(self) -> BundleRecord | None:
        """See :meth:`FeedbackStorage.latest_bundle`."""
        return self._one_bundle("ORDER BY model_version DESC LIMIT 1", ())

    def _one_bundle(self, tail: str, params: Sequence[object]) -> BundleRecord | None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT model_version, manifest_sha256, signature, "
                f"extract(epoch FROM published_at)::float8 FROM bundles {tail}",
                params,
            ).fetchone()
        if row is None:
            return None
        version, sha256, signature, published_at = row
        return BundleRecord(int(version), str(sha256), bytes(signature), float(published_at))

    @property
    def committer(self) -> CommitQueue[_Batch]:
        """The intake thread's queue (its ``groups`` and ``largest_group`` counters show the
        grouping)."""
        return self._intake

    # ------------------------------------------------------------------ lifecycle

    def ping(self) -> None:
        """See :meth:`FeedbackStorage.ping`."""
        with self._connection() as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        """Write the batches queued for intake, then close the pool (idempotent)."""
        self._intake.close()
        self._pool.close()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute(_CREATE_STAGING)

    @contextmanager
    def _errors(self, keep: tuple[type[Exception], ...] = ()) -> Iterator[None]:
        """psycopg failures as storage errors: unreachable or timed out →
        ``StorageUnavailableError``; the rest but ``keep`` → ``StorageError``."""
        try:
            yield
        except keep:
            raise
        except psycopg_pool.PoolClosed as exc:  # before OperationalError, its base
            raise StorageError(f"{self.where}: the storage is closed") from exc
        except psycopg.OperationalError as exc:  # unreachable, connection lost, pool timeout
            raise StorageUnavailableError(f"{self.where}: {exc}") from exc
        except psycopg.Error as exc:
            raise StorageError(f"{self.where}: {exc}") from exc

    @contextmanager
    def _connection(
        self, keep: tuple[type[Exception], ...] = ()
    ) -> Iterator[psycopg.Connection[Any]]:
        with self._errors(keep), self._pool.connection() as conn:
            yield conn

    def _stream(self, query: str, params: Sequence[object]) -> Iterator[StoredEvent]:
        """Rows of ``query`` as events through a server-side cursor in one transaction (the
        connection is taken on the first ``next()`` and returned when the iterator ends or is
        closed)."""
        with (
            self._connection() as conn,
            conn.transaction(),
            conn.cursor(name="pocketrec_stream") as cursor,
        ):
            cursor.itersize = _STREAM_ROWS
            cursor.execute(query, params)
            for row in cursor:
                yield StoredEvent(*row)


class _Migration:
    """``MigrationTarget`` on one connection: the version table, an advisory lock per schema."""

    def __init__(self, conn: psycopg.Connection[Any], where: str) -> None:
        self.conn = conn
        self.where = where

    def current_version(self) -> int:
        """See ``MigrationTarget.current_version``; refuses a schema with our table names but
        no version table."""
        row = self.conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass('devices') IS NOT NULL OR "
            "to_regclass('events') IS NOT NULL",
            (schema.VERSION_TABLE,),
        ).fetchone()
        assert row is not None
        versioned, taken = row
        if versioned:
            return _version(self.conn)
        if taken:
            raise StorageError(
                f"{self.where}: not a pocketrec server schema (tables devices or events exist "
                f"without {schema.VERSION_TABLE}); it was not changed"
            )
        return 0

    @contextmanager
    def step_transaction(self) -> Iterator[int]:
        """See ``MigrationTarget.step_transaction``."""
        with self.conn.transaction():
            self.conn.execute(schema.LOCK_MIGRATIONS, (schema.MIGRATION_LOCK,))
            self.conn.execute(schema.CREATE_VERSION_TABLE)
            yield _version(self.conn)

    def execute(self, statement: str) -> None:
        """See ``MigrationTarget.execute``."""
        self.conn.execute(statement)

    def set_version(self, version: int, description: str) -> None:
        """See ``MigrationTarget.set_version``."""
        self.conn.execute(
            f"INSERT INTO {schema.VERSION_TABLE} (version, description) VALUES (%s, %s)",
            (version, description),
        )


def _version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {schema.VERSION_TABLE}").fetchone()
    assert row is not None
    return int(row[0])


def _partitions(conn: psycopg.Connection[Any]) -> list[tuple[str, bool]]:
    """``(name, detach pending)`` of every partition attached to ``events``."""
    return [
        (str(name), bool(pending))
        for name, pending in conn.execute(
            "SELECT c.relname, i.inhdetachpending FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass"
        ).fetchall()
    ]


def _detached(conn: psycopg.Connection[Any]) -> list[str]:
    """Tables named like a partition in ``events``' schema that are not partitions (detached
    by retention and not dropped yet)."""
    return [
        str(name)
        for (name,) in conn.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND NOT relispartition "
            "AND relname ~ '^events_p[0-9]{8}$' AND relnamespace = "
            "(SELECT relnamespace FROM pg_class WHERE oid = 'events'::regclass)"
        ).fetchall()
    ]


def _owner(device_id: str, user_id: str | None) -> tuple[str, tuple[str, ...]]:
    if user_id is None:
        return "device_id = %s", (device_id,)
    return "device_id = %s AND user_id = %s", (device_id, user_id)


def _at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


__all__ = ["Intake", "PostgresFeedbackStorage", "describe"]


class _Batch(NamedTuple):
    """One upload queued for the intake thread."""

    device_id: str
    events: Sequence[EventRecord]
    received_at: float | None


def _count(rows: Sequence[tuple[int, int]]) -> int:
    """The new events of a one-batch statement (its per-batch counts summed)."""
    return sum(int(new) for _part, new in rows)


def _new_counts(
    conn: psycopg.Connection[Any],
    batches: Sequence[tuple[str, Sequence[EventRecord]]],
    received_at: float | None,
) -> list[int]:
    """Write ``batches`` (``(device_id, events)``) in one statement; their new events, in order."""
    rows = orjson.dumps([[tuple(e) for e in events] for _device, events in batches])
    params = {
        "at": received_at,
        "devices": [device for device, _events in batches],
        "batches": rows.decode(),
    }
    counts = [0] * len(batches)
    for part, new in conn.execute(_INSERT_JSON, params):
        counts[int(part) - 1] = int(new)
    return counts
