"""The feedback events as day-partitioned Parquet files, written in bounded memory.

Layout of the export folder (hive style, readable by DuckDB, Spark and ``pyarrow.dataset``)::

    OUT/day=2024-05-01/part-00000.parquet   the events whose event time is on that UTC day
    OUT/day=2024-05-02/part-00000.parquet
    OUT/_common_metadata                    the schema (a Parquet footer without rows)
    OUT/_pocketrec_export.json              what wrote it: format, version, rows, days, files

Schema (:data:`COLUMNS`; one row per stored event; ``day`` is the folder name, not a column in
the files):

============== ============================ ==================================================
column         Arrow type                   meaning
============== ============================ ==================================================
event_id       string                       canonical UUID, unique
device_id      string                       the device that uploaded it
user_id        string                       the profile on that device
user           string                       ``device_id/user_id``: the user training reads
item_id        string                       the item
event_type     string                       view, click, purchase, like, dislike, dismiss
timestamp      double (float64)             event time, seconds since the epoch, exactly as sent
event_time     timestamp[us, tz=UTC]        the same instant rounded to the microsecond
seq            int64 (nullable)             the device's sequence number
context        string (nullable)            compact JSON object
received_at    timestamp[us, tz=UTC]        when the server stored it
arrival        int64                        0-based position in the server's arrival order
============== ============================ ==================================================

``day`` = the UTC date of ``event_time`` (the day the user acted, not the day the phone synced:
feature jobs select behaviour by when it happened; ``received_at`` keeps the other). Each file's
rows are in arrival order; ``arrival`` restores the global order (``pocketrec train`` sorts by
it, so the Parquet and CSV exports of one server load to identical interactions).

Memory: :meth:`FeedbackStorage.iter_events` yields arrival order, where a phone that was offline
uploads days of events at once, so days interleave. Each batch of :data:`BATCH_ROWS` events is
grouped by day and converted to Arrow per day; a day's rows wait until :data:`ROW_GROUP_ROWS` are
pending (then one row group is written), and when more than :data:`PENDING_ROWS` wait over all
days the largest day is written. At most :data:`MAX_OPEN_FILES` files are open: the least recently
written one is closed, and a later row of its day starts its next ``part-NNNNN`` file. Memory
thus stays bounded whatever the order; the number of files grows only when more than
``MAX_OPEN_FILES`` days interleave.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import groupby, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pocketrec.core.loaders import ARRIVAL_COLUMN, SCHEMA_FILE
from pocketrec.server.storage import StoredEvent

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

FORMAT = "pocketrec-feedback-parquet"
FORMAT_VERSION = 1
MARKER = "_pocketrec_export.json"
"""The file that marks a folder as an export (only such a folder is replaced by a new one)."""
PARTITION = "day"
BATCH_ROWS = 2_048
"""Events read and grouped by day at a time."""
ROW_GROUP_ROWS = 32_768
"""Rows per Parquet row group (fewer when memory forces a day out early, or at the end)."""
PENDING_ROWS = ROW_GROUP_ROWS
"""Most rows held in memory, over all days, before the largest day is written."""
MAX_OPEN_FILES = 16
"""Most Parquet files open at once."""
COMPRESSION = "zstd"
DICTIONARY_COLUMNS = ("device_id", "user_id", "user", "item_id", "event_type")
"""Columns whose values repeat, dictionary-encoded; the others (unique ids, times, contexts)
are not: a dictionary encoder's table for them costs memory per open file and saves nothing."""

_US = 1_000_000
_DAY_US = 86_400 * _US

COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "string"),
    ("device_id", "string"),
    ("user_id", "string"),
    ("user", "string"),
    ("item_id", "string"),
    ("event_type", "string"),
    ("timestamp", "double"),
    ("event_time", "timestamp[us, tz=UTC]"),
    ("seq", "int64"),
    ("context", "string"),
    ("received_at", "timestamp[us, tz=UTC]"),
    (ARRIVAL_COLUMN, "int64"),
)
"""Column names and Arrow types (as ``str(pyarrow type)`` spells them) of the files, in order
(see the module docstring)."""

_NULLABLE = frozenset({"seq", "context"})


def arrow_schema() -> pa.Schema:
    """The Arrow schema of :data:`COLUMNS` (imports pyarrow)."""
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "double": pa.float64(),
        "int64": pa.int64(),
        "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema(
        [pa.field(name, types[kind], nullable=name in _NULLABLE) for name, kind in COLUMNS]
    )


def to_microseconds(seconds: float) -> int:
    """Seconds since the epoch as whole microseconds (rounded), the unit of ``event_time``."""
    return round(seconds * _US)


def day_name(event_time_us: int) -> str:
    """The partition value of an event time in microseconds: its UTC date, ``YYYY-MM-DD``."""
    day = datetime.fromtimestamp(event_time_us // _DAY_US * 86_400, tz=timezone.utc)
    return day.date().isoformat()


def check_replaceable(out: Path) -> None:
    """``ValueError`` unless ``out`` is absent, an empty folder or an earlier export (a new
    export replaces it whole; anything else is never deleted)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"{out} is a file; a Parquet export writes a folder")
    if (out / MARKER).is_file() or not any(out.iterdir()):
        return
    raise ValueError(
        f"{out} is a non-empty folder that is not a pocketrec feedback export (no {MARKER}); "
        "refusing to replace it"
    )


@dataclass
class _Day:
    """The rows of one day waiting to be written, and its open file."""

    name: str
    pending: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0
    writer: pq.ParquetWriter | None = None
    parts: int = 0
    files: list[str] = field(default_factory=list)


class _PartitionedWriter:
    """Appends Arrow batches per day and writes them as row groups in bounded memory."""

    def __init__(self, root: Path, schema: pa.Schema) -> None:
        self.root = root
        self.schema = schema
        self.days: dict[str, _Day] = {}
        self.open: OrderedDict[str, _Day] = OrderedDict()  # least recently written first
        self.pending = 0

    def add(self, day_name: str, batch: pa.RecordBatch) -> None:
        day = self.days.get(day_name)
        if day is None:
            day = self.days[day_name] = _Day(day_name)
        day.pending.append(batch)
        day.rows += batch.num_rows
        self.pending += batch.num_rows
        if day.rows >= ROW_GROUP_ROWS:
            self._write(day)
        while self.pending > PENDING_ROWS:
            self._write(max(self.days.values(), key=lambda d: d.rows))

    def _write(self, day: _Day) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if day.writer is None:
            if len(self.open) >= MAX_OPEN_FILES:
                _name, oldest = self.open.popitem(last=False)
                self._close(oldest)
            folder = self.root / f"{PARTITION}={day.name}"
            folder.mkdir(exist_ok=True)
            path = folder / f"part-{day.parts:05d}.parquet"
            day.parts += 1
            day.files.append(str(path.relative_to(self.root)))
            day.writer = pq.ParquetWriter(
                path,
                self.schema,
                compression=COMPRESSION,
                use_dictionary=list(DICTIONARY_COLUMNS),
            )
        self.open[day.name] = day
        self.open.move_to_end(day.name)
        table = pa.Table.from_batches(day.pending, schema=self.schema)
        day.writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.pending -= day.rows
        day.pending, day.rows = [], 0

    def _close(self, day: _Day) -> None:
        if day.writer is not None:
            day.writer.close()
            day.writer = None

    def finish(self) -> list[str]:
        """Write what is pending, close every file; the files written, relative to the root."""
        for day in sorted(self.days.values(), key=lambda d: d.name):
            if day.rows:
                self._write(day)
        self.close()
        return sorted(f for day in self.days.values() for f in day.files)

    def close(self) -> None:
        """Close every open file (also after a failure)."""
        for day in self.open.values():
            self._close(day)
        self.open.clear()


def _runs_by_day(
    events: Iterable[StoredEvent],
) -> Iterator[tuple[str, list[tuple[StoredEvent, int, int]]]]:
    """``(day, rows)`` runs: each batch of :data:`BATCH_ROWS` events grouped by the UTC day of
    their event time, rows ``(event, arrival, event_time_us)`` in arrival order within a run."""
    iterator = iter(events)
    arrival = 0
    while batch := list(islice(iterator, BATCH_ROWS)):
        rows = [(e, arrival + k, to_microseconds(e.timestamp)) for k, e in enumerate(batch)]
        arrival += len(rows)
        rows.sort(key=lambda row: row[2] // _DAY_US)  # stable: arrival order within a day
        for _day, run in groupby(rows, key=lambda row: row[2] // _DAY_US):
            run_rows = list(run)
            yield day_name(run_rows[0][2]), run_rows


def _record_batch(rows: list[tuple[StoredEvent, int, int]], schema: pa.Schema) -> pa.RecordBatch:
    """One Arrow batch of ``(event, arrival, event_time_us)`` rows, in the schema's order."""
    import pyarrow as pa

    columns: dict[str, list[Any]] = {
        "event_id": [e.event_id for e, _, _ in rows],
        "device_id": [e.device_id for e, _, _ in rows],
        "user_id": [e.user_id for e, _, _ in rows],
        "user": [e.training_user for e, _, _ in rows],
        "item_id": [e.item_id for e, _, _ in rows],
        "event_type": [e.event_type for e, _, _ in rows],
        "timestamp": [e.timestamp for e, _, _ in rows],
        "event_time": [us for _, _, us in rows],
        "seq": [e.seq for e, _, _ in rows],
        "context": [e.context for e, _, _ in rows],
        "received_at": [to_microseconds(e.received_at) for e, _, _ in rows],
        ARRIVAL_COLUMN: [a for _, a, _ in rows],
    }
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def write_parquet(events: Iterable[StoredEvent], staging: Path) -> int:
    """Write ``events`` (in arrival order) into the empty folder ``staging`` in the layout of the
    module docstring; returns the number of rows. The caller installs the folder atomically."""
    import pyarrow.parquet as pq

    schema = arrow_schema()
    writer = _PartitionedWriter(staging, schema)
    rows = 0
    try:
        for day, run in _runs_by_day(events):
            writer.add(day, _record_batch(run, schema))
            rows += len(run)
        files = writer.finish()
    finally:
        writer.close()
    pq.write_metadata(schema, staging / SCHEMA_FILE)
    marker = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rows": rows,
        "days": len(writer.days),
        "files": files,
        "partitioning": f"hive: {PARTITION}=YYYY-MM-DD (UTC date of event_time)",
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return rows
