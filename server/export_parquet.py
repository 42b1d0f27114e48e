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
uploads days of events at once, so days interleave. Two passes keep memory bounded whatever the
order and still give each day large row groups:

1. *spill*: each batch of :data:`BATCH_ROWS` events is grouped by day and converted to Arrow per
   day; a day's rows wait until :data:`SPILL_ROWS` are pending over all days, then the largest
   day is appended to its spill file (``.spill/`` in the staging folder, lz4, no dictionaries)
   as one row group; at most :data:`MAX_OPEN_FILES` are open (the least recently written one is
   closed; its day's next rows start another spill file);
2. *compact*: day by day, the spill files are read back in order and rewritten as
   ``part-NNNNN.parquet`` (zstd, dictionaries for repeated columns) with row groups of
   :data:`ROW_GROUP_ROWS` rows (the last one of a file smaller), at most :data:`FILE_ROWS` rows
   a file; then the spill files are deleted.

Peak memory is one pass's buffers (``SPILL_ROWS`` or ``ROW_GROUP_ROWS`` rows of Arrow data), not
the number of events; the spill costs a second write and read of the data (the staging folder
holds at most about twice the export's size while it runs). ``pocketrec export-feedback`` also
gives pyarrow the C library's allocator (``ARROW_DEFAULT_MEMORY_POOL=system``): pyarrow's default,
mimalloc, keeps freed buffers, ~20 MB more at the peak of a 1M-event export.
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
from pocketrec.core.optional import import_optional
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
SPILL_ROWS = 32_768
"""Most rows held in memory, over all days, during the spill pass."""
MAX_OPEN_FILES = 64
"""Most spill files open at once."""
ROW_GROUP_ROWS = 32_768
"""Rows per row group of the exported files."""
FILE_ROWS = 128 * ROW_GROUP_ROWS
"""Most rows per exported file (a larger day gets several ``part-NNNNN`` files)."""
COMPRESSION = "zstd"
SPILL_COMPRESSION = "lz4"
SPILL = ".spill"
DICTIONARY_COLUMNS = ("device_id", "user_id", "user", "item_id", "event_type")
"""Columns whose values repeat, dictionary-encoded; the others (unique ids, times, contexts)
are not: a dictionary encoder's table for them costs memory and saves nothing."""

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
    """One day's rows waiting to be spilled, its open spill file and the spill files so far."""

    name: str
    pending: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0
    writer: pq.ParquetWriter | None = None
    spills: list[Path] = field(default_factory=list)


class _Spiller:
    """Pass 1: appends Arrow batches per day, spilling them to files in bounded memory."""

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
        while self.pending > SPILL_ROWS:
            self._spill(max(self.days.values(), key=lambda d: d.rows))

    def _spill(self, day: _Day) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if day.writer is None:
            if len(self.open) >= MAX_OPEN_FILES:
                _name, oldest = self.open.popitem(last=False)
                self._close(oldest)
            path = self.root / f"{day.name}.{len(day.spills)}.parquet"
            day.spills.append(path)
            day.writer = pq.ParquetWriter(
                path, self.schema, compression=SPILL_COMPRESSION, use_dictionary=False
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

    def finish(self) -> list[_Day]:
        """Spill what is pending and close every file; the days, by name."""
        for day in self.days.values():
            if day.rows:
                self._spill(day)
        self.close()
        return sorted(self.days.values(), key=lambda d: d.name)

    def close(self) -> None:
        """Close every open spill file (also after a failure)."""
        for day in self.open.values():
            self._close(day)
        self.open.clear()


def _compact(day: _Day, folder: Path, schema: pa.Schema) -> list[Path]:
    """Pass 2: rewrite a day's spill files, in order, as ``part-NNNNN.parquet`` files in
    ``folder`` with row groups of :data:`ROW_GROUP_ROWS` rows; delete the spill files. Returns
    the files written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    written: list[Path] = []
    writer: pq.ParquetWriter | None = None
    in_file = 0

    def write(table: pa.Table) -> None:
        nonlocal writer, in_file
        if writer is None or in_file + table.num_rows > FILE_ROWS:
            if writer is not None:
                writer.close()
            written.append(folder / f"part-{len(written):05d}.parquet")
            writer = pq.ParquetWriter(
                written[-1], schema, compression=COMPRESSION,
                use_dictionary=list(DICTIONARY_COLUMNS),
            )  # fmt: skip
            in_file = 0
        writer.write_table(table, row_group_size=max(1, table.num_rows))
        in_file += table.num_rows

    try:
        pending: list[pa.RecordBatch] = []
        rows = 0
        for spill in day.spills:
            spilled = pq.ParquetFile(spill)
            for group in range(spilled.num_row_groups):  # one at a time: iter_batches keeps more
                batch = spilled.read_row_group(group, use_threads=False)
                pending += batch.to_batches()
                rows += batch.num_rows
                while rows >= ROW_GROUP_ROWS:
                    table = pa.Table.from_batches(pending, schema=schema)
                    write(table.slice(0, ROW_GROUP_ROWS))
                    rest = table.slice(ROW_GROUP_ROWS)
                    pending, rows = rest.to_batches(), rest.num_rows
            spill.unlink()
        if rows:
            write(pa.Table.from_batches(pending, schema=schema))
    finally:
        if writer is not None:
            writer.close()
    return written


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
    module docstring; returns the number of rows. The caller installs the folder atomically.
    :class:`~pocketrec.core.errors.MissingDependencyError` when pyarrow is not installed."""
    pq = import_optional("pyarrow.parquet", "server", "the Parquet export")

    schema = arrow_schema()
    spill = staging / SPILL
    spill.mkdir()
    spiller = _Spiller(spill, schema)
    rows = 0
    try:
        for name, run in _runs_by_day(events):
            spiller.add(name, _record_batch(run, schema))
            rows += len(run)
        days = spiller.finish()
    finally:
        spiller.close()
    files: list[str] = []
    for day in days:
        written = _compact(day, staging / f"{PARTITION}={day.name}", schema)
        files += [str(path.relative_to(staging)) for path in written]
    spill.rmdir()
    pq.write_metadata(schema, staging / SCHEMA_FILE)
    marker = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rows": rows,
        "days": len(days),
        "files": files,
        "partitioning": f"hive: {PARTITION}=YYYY-MM-DD (UTC date of event_time)",
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return rows
