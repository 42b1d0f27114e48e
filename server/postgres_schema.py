"""The PostgreSQL schema of the sync server: its migration steps and the day partitions of
``events``.

Tables (all in the connection's current schema, ``search_path``):

- ``pocketrec_schema``: the version table, one row per applied step (``version``,
  ``description``, ``applied_at``); the schema version is the highest ``version``.
- ``devices``: ``device_id`` (primary key), ``token_sha256`` (unique, 64 hex digits: the token
  itself is never stored), ``revoked``, ``created_at``, ``revoked_at``.
- ``events``: partitioned by range of ``received_at`` into one partition per UTC day,
  ``events_pYYYYMMDD``. ``id`` (from the sequence ``events_id_seq``: arrival order),
  ``received_at``, ``event_id`` (uuid), ``device_id``, ``seq``, ``user_id``, ``item_id``,
  ``event_type`` (name), ``ts`` (float8 seconds since the epoch, exact), ``context`` (the JSON
  text as received).
  Partitioned indexes ``events_id (id)`` (ordered streaming: a merge of the partitions) and
  ``events_device_user (device_id, user_id)`` (data requests).
- ``event_ids``: NOT partitioned, ``event_id`` uuid primary key, ``received_at`` (the same value as
  the event row's). A unique key on a partitioned table must contain the partition key, so
  ``UNIQUE (event_id)`` cannot live on ``events``: this table is the exactly-once guard. Intake
  inserts the batch's ids here ``ON CONFLICT DO NOTHING RETURNING event_id`` and the events for the
  returned ids only, in the same statement. BRIN index on ``received_at`` for retention.
- ``bundles``: ``model_version`` (primary key), ``manifest_sha256``, ``signature`` (bytea, 64
  bytes), ``published_at``.

Partitions are created ahead (:data:`AHEAD_DAYS`) and on demand, each as a plain table then
``ATTACH PARTITION`` (a SHARE UPDATE EXCLUSIVE lock on ``events``, which inserts and reads do not
wait for; ``CREATE TABLE … PARTITION OF`` would take ACCESS EXCLUSIVE), under a transaction-level
advisory lock so that several server processes never race on the same name.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

from pocketrec.server.migrations import Step

VERSION_TABLE = "pocketrec_schema"
AHEAD_DAYS = 7
"""Day partitions kept ready beyond today (UTC)."""

PARTITION_PREFIX = "events_p"
_PARTITION_NAME = re.compile(r"^events_p(\d{8})$")

MIGRATION_LOCK = 0x706B72_01
"""High half of the advisory-lock key serializing migrations (low half: the schema's oid)."""
PARTITION_LOCK = 0x706B72_02
"""High half of the advisory-lock key serializing partition DDL (low half: ``events``' oid)."""

LOCK_MIGRATIONS = (
    "SELECT pg_advisory_xact_lock((%s::bigint << 32) | "
    "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())::bigint)"
)
LOCK_PARTITIONS = (
    "SELECT pg_advisory_xact_lock((%s::bigint << 32) | 'events'::regclass::oid::bigint)"
)

STEPS: tuple[Step, ...] = (
    Step(
        "devices, day-partitioned events with the event_ids guard, bundles",
        (
            """
            CREATE TABLE devices (
                device_id text PRIMARY KEY,
                token_sha256 text NOT NULL UNIQUE CHECK (length(token_sha256) = 64),
                revoked boolean NOT NULL DEFAULT false,
                created_at timestamptz NOT NULL DEFAULT now(),
                revoked_at timestamptz
            )
            """,
            "CREATE SEQUENCE events_id_seq AS bigint",
            """
            CREATE TABLE events (
                id bigint NOT NULL DEFAULT nextval('events_id_seq'),
                received_at timestamptz NOT NULL,
                event_id uuid NOT NULL,
                device_id text NOT NULL,
                seq bigint,
                user_id text NOT NULL,
                item_id text NOT NULL,
                event_type text NOT NULL,
                ts double precision NOT NULL,
                context text
            ) PARTITION BY RANGE (received_at)
            """,
            "ALTER SEQUENCE events_id_seq OWNED BY events.id",
            "CREATE INDEX events_id ON events (id)",
            "CREATE INDEX events_device_user ON events (device_id, user_id)",
            """
            CREATE TABLE event_ids (
                event_id uuid PRIMARY KEY,
                received_at timestamptz NOT NULL
            )
            """,
            "CREATE INDEX event_ids_received ON event_ids USING brin (received_at)",
            """
            CREATE TABLE bundles (
                model_version bigint PRIMARY KEY,
                manifest_sha256 text NOT NULL CHECK (length(manifest_sha256) = 64),
                signature bytea NOT NULL,
                published_at timestamptz NOT NULL
            )
            """,
        ),
    ),
)
SCHEMA_VERSION = len(STEPS)

CREATE_VERSION_TABLE = f"""
    CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
        version integer PRIMARY KEY,
        description text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
    )
"""


def partition_name(day: dt.date) -> str:
    """The name of ``events``' partition holding UTC day ``day``."""
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def partition_day(name: str) -> dt.date | None:
    """The UTC day of a partition name (``None`` if ``name`` is not one)."""
    match = _PARTITION_NAME.match(name)
    return None if match is None else dt.datetime.strptime(match[1], "%Y%m%d").date()


def day_start(day: dt.date) -> dt.datetime:
    """00:00 UTC of ``day`` (an aware datetime)."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def utc_day(seconds: float) -> dt.date:
    """The UTC day of ``seconds`` since the epoch."""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).date()


def days(first: dt.date, last: dt.date) -> Iterable[dt.date]:
    """``first`` to ``last`` inclusive."""
    for offset in range((last - first).days + 1):
        yield first + dt.timedelta(days=offset)
