"""Read interaction files into :class:`~pocketrec.core.dataset.Interactions`.

Formats (``format=`` names):

- ``"recbole"``: RecBole atomic ``.inter`` file, tab-separated, header of ``name:type`` fields
  (``user_id:token item_id:token rating:float timestamp:float``; rating and timestamp optional).
  Each user's events are sorted by (timestamp, line order). Ratings map to events:
  ``rating <= 2`` -> ``dislike``, ``rating >= 4`` -> ``like``, otherwise (3) -> ``click``; no
  rating column -> ``click``. A sibling ``.item`` file (same stem) adds titles and metadata: the
  column whose name contains ``title`` gives the title, a column whose name contains ``year``
  becomes ``release_year`` (an int; left out when not a number), ``class``/``genre`` columns become
  ``genres`` (a list, from ``token_seq``); other columns are kept under their names.
- ``"sequences"``: one user a line, ``user item item ...`` (whitespace-separated, time order);
  all events are ``click``; no timestamps.
- ``"pairs"``: one interaction a line, ``user item``, each user's lines in time order; all
  ``click``; no timestamps.
- ``"csv"``: comma-separated with a header row naming ``user``, ``item``, ``timestamp`` and
  optionally ``event`` (a registered event name, default ``click``), ``title`` and ``genres``
  (``|``-separated). Columns may come in any order (``user_id``/``item_id`` are accepted too).
  Each user's events are sorted by (timestamp, line order). See :func:`write_csv`.
- ``"parquet"``: a ``.parquet`` file, or a folder of them (directly inside it or in hive-style
  ``name=value`` partition folders at any depth, e.g. ``pocketrec export-feedback --format
  parquet``'s ``day=YYYY-MM-DD/``; names starting with ``.`` or ``_`` are skipped). Columns as
  for ``"csv"`` (``user``/``user_id``, ``item``/``item_id``, ``timestamp``/``time``/``ts``,
  optional ``event``/``event_type``; other columns are ignored); ids are strings (or integers,
  read as their decimal text), times numbers of seconds or Arrow timestamps. Rows are read in
  :data:`ARRIVAL_COLUMN` order when every file has that column (the feedback export's arrival
  order, so its Parquet and CSV exports load identically), else in file order (paths sorted).
  "Line" in a report or error is the 1-based row within the file. Needs pyarrow (imported only
  here).

``format="auto"`` (see :func:`detect_format`) and directories holding one data file are accepted.

Bad input never surfaces as a raw traceback: an unreadable, empty or unrecognised file raises
:class:`~pocketrec.core.errors.DataFormatError` naming the file (and line). A malformed line is
skipped and counted in the :class:`~pocketrec.core.dataset.LoadReport` (``strict=False``, the
default) or raises ``DataFormatError`` with its line number (``strict=True``). An unknown event
name in a CSV always raises: it means the file uses another vocabulary, not that a line is damaged.
Users with fewer than ``min_events`` events are dropped and counted.

User and item ids are kept as strings (``"1"`` stays ``"1"``), with surrounding spaces removed;
indices follow first appearance (users: in the file; items: in the time-ordered sequences; see
:mod:`pocketrec.core.dataset`). Blank lines are ignored everywhere.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pocketrec.core.dataset import Interactions, InteractionsBuilder, LoadReport
from pocketrec.core.errors import DataFormatError
from pocketrec.core.events import EVENT_NAMES, EventType, event_code
from pocketrec.core.optional import import_optional

FORMATS: tuple[str, ...] = ("recbole", "sequences", "pairs", "csv", "parquet")
"""Format names accepted by :func:`load` (besides ``"auto"``)."""

DATA_SUFFIXES: tuple[str, ...] = (".inter", ".txt", ".csv")
"""File name endings :func:`load` looks for inside a directory."""

DETECT_LINES = 100
"""How many non-empty lines :func:`detect_format` inspects."""

CSV_ALIASES: dict[str, tuple[str, ...]] = {
    "user": ("user", "user_id"),
    "item": ("item", "item_id"),
    "timestamp": ("timestamp", "time", "ts"),
    "event": ("event", "event_type"),
    "title": ("title", "item_title"),
    "genres": ("genres", "genre"),
}
"""Accepted CSV (and Parquet) column names, lower-cased, for each column, by priority when a file
has several (the feedback export has ``user`` and ``user_id``); the first is what we write."""

ARRIVAL_COLUMN = "arrival"
"""A Parquet column of distinct integers giving the rows' order (see the module docstring)."""

PARQUET_SUFFIX = ".parquet"
PARQUET_MAGIC = b"PAR1"
SCHEMA_FILE = "_common_metadata"
"""A Parquet dataset's schema-only file: a folder with it and no data files is an empty dataset."""

_CLICK = int(EventType.CLICK)
_PathLike = str | os.PathLike[str]


def rating_event(rating: float) -> int:
    """Event code of an explicit rating: ``<= 2`` dislike, ``>= 4`` like, otherwise click."""
    if rating <= 2:
        return int(EventType.DISLIKE)
    if rating >= 4:
        return int(EventType.LIKE)
    return _CLICK


# --------------------------------------------------------------------------- shared helpers


@dataclass
class _Context:
    """Where we are reading and what to do with a bad line."""

    path: str
    report: LoadReport
    strict: bool
    prefix: str = ""  # put before skip reasons (names a secondary file in the shared report)

    def bad(self, reason: str, line: int, detail: str = "") -> None:
        """Skip-and-count a malformed line, or raise in strict mode."""
        if self.strict:
            raise DataFormatError(f"{reason}{': ' + detail if detail else ''}", self.path, line)
        self.report.skip(self.prefix + reason, line)


def _decode_error(
    path: Path, data: bytes, exc: UnicodeDecodeError, first_line: int = 1
) -> DataFormatError:
    """The error for undecodable bytes, naming the line (``data`` starts at ``first_line``)."""
    line = first_line + data.count(b"\n", 0, exc.start)
    return DataFormatError("not UTF-8 text (a binary file?)", os.fspath(path), line)


def _read_lines(path: Path) -> list[str]:
    """All lines of a UTF-8 text file (BOM and ``\\r\\n`` handled), line ``n`` at ``n - 1``.

    Raises ``DataFormatError`` for an undecodable (binary) file or one with no non-blank line.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _decode_error(path, data, exc) from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not any(line.strip() for line in lines):
        raise DataFormatError("empty file (no data lines)", os.fspath(path))
    return lines


def _head_lines(path: Path, count: int) -> list[str]:
    """The first ``count`` non-blank lines (stripped), reading no further than needed."""
    found: list[str] = []
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh):
            try:
                line = raw.decode("utf-8-sig" if n == 0 else "utf-8").strip()
            except UnicodeDecodeError as exc:
                raise _decode_error(path, raw, exc, first_line=n + 1) from None
            if line:
                found.append(line)
                if len(found) == count:
                    break
    if not found:
        raise DataFormatError("empty file (no data lines)", os.fspath(path))
    return found


def _start(path: _PathLike, fmt: str, strict: bool, min_events: int) -> tuple[Path, _Context]:
    """Check arguments, resolve a directory to its data file, make the reading context."""
    if min_events < 1:
        raise ValueError(f"min_events must be >= 1, got {min_events}")
    file = resolve_data_file(path)
    name = os.fspath(file)
    return file, _Context(name, LoadReport(name, fmt), strict)


def _finite_float(text: str) -> float | None:
    """``float(text)`` when it is a finite number, else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _finish(b: InteractionsBuilder, ctx: _Context, min_events: int) -> Interactions:
    """Build the result; ``DataFormatError`` when no line gave an interaction."""
    if not len(b):
        skipped = ctx.report.total_skipped
        why = f" ({skipped} lines skipped: {dict(ctx.report.skipped)})" if skipped else ""
        raise DataFormatError(f"no valid interactions{why}", ctx.path)
    return b.build(min_events=min_events, name=Path(ctx.path).name, report=ctx.report)


# --------------------------------------------------------------------------- formats


def _recbole_fields(header: str) -> list[str] | None:
    """Field names of a RecBole header (``name:type`` tab-separated), or None if it is not one."""
    parts = [p.strip() for p in header.split("\t")]
    if not parts or not all(":" in p for p in parts):
        return None
    return [p.split(":", 1)[0] for p in parts]


def _header_or_raise(lines: list[str], ctx: _Context) -> tuple[int, list[str]]:
    """Index and fields of the first non-blank line, which must be a RecBole header."""
    first = next(n for n, line in enumerate(lines) if line.strip())
    names = _recbole_fields(lines[first])
    if names is None:
        raise DataFormatError(
            "expected a RecBole header of tab-separated 'name:type' fields, "
            f"e.g. 'user_id:token\\titem_id:token', got {lines[first][:80]!r}",
            ctx.path,
            first + 1,
        )
    return first, names


def _column(names: list[str], wanted: str, ctx: _Context, line: int) -> int:
    """Position of a required RecBole column; ``DataFormatError`` naming what exists otherwise."""
    if wanted not in names:
        raise DataFormatError(f"no {wanted!r} column in the header (found {names})", ctx.path, line)
    return names.index(wanted)


def _recbole_rows(
    lines: list[str], first: int, width: int, ctx: _Context
) -> Iterator[tuple[int, list[str]]]:
    """(1-based line, stripped fields) of each non-blank line after the header at ``first``.

    Lines without ``width`` tab-separated fields are reported to ``ctx`` and left out.
    """
    for n in range(first + 1, len(lines)):
        line = lines[n]
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != width:
            ctx.bad(f"expected {width} tab-separated fields", n + 1, f"got {len(fields)}")
            continue
        yield n + 1, fields


def _item_meta_value(name: str, kind: str, value: str) -> tuple[str, Any] | None:
    """(key, value) of one ``.item`` field for ``item_meta``, None to leave it out."""
    if "year" in name:
        return ("release_year", int(value)) if value.isdigit() else None
    if name in ("class", "genre", "genres"):
        return "genres", value.split()
    if kind.endswith("_seq"):
        return name, value.split()
    if kind == "float":
        number = _finite_float(value)
        return None if number is None else (name, number)
    return name, value


def _read_recbole_items(
    path: Path, report: LoadReport, strict: bool, b: InteractionsBuilder
) -> None:
    """Fill ``b.titles`` / ``b.meta`` from a RecBole ``.item`` file (see the module docstring).

    Its skipped lines are counted in ``report`` under reasons prefixed with the file name.
    """
    ctx = _Context(os.fspath(path), report, strict, prefix=f"{path.name}: ")
    lines = _read_lines(path)
    first, names = _header_or_raise(lines, ctx)
    types = [p.split(":", 1)[1].strip() for p in lines[first].split("\t")]
    id_col = _column(names, "item_id", ctx, first + 1)
    title_col = next((k for k, n in enumerate(names) if "title" in n or n == "name"), None)
    for _, fields in _recbole_rows(lines, first, len(names), ctx):
        item = fields[id_col]
        meta: dict[str, Any] = {}
        for k, (name, kind, value) in enumerate(zip(names, types, fields, strict=True)):
            if k == title_col:
                b.titles[item] = value
            elif k != id_col and (entry := _item_meta_value(name, kind, value)) is not None:
                meta[entry[0]] = entry[1]
        b.meta[item] = meta


def load_recbole(
    path: _PathLike,
    *,
    item_path: _PathLike | None = None,
    min_events: int = 1,
    strict: bool = False,
) -> tuple[Interactions, LoadReport]:
    """Load a RecBole ``.inter`` file (and its ``.item`` sibling, or ``item_path``).

    Returns ``(interactions, report)``; events from ratings as in the module docstring,
    ``timestamps`` float64 seconds when the file has a timestamp column (else ``None``).
    """
    file, ctx = _start(path, "recbole", strict, min_events)
    lines = _read_lines(file)
    first, names = _header_or_raise(lines, ctx)
    user_col = _column(names, "user_id", ctx, first + 1)
    item_col = _column(names, "item_id", ctx, first + 1)
    rating_col = names.index("rating") if "rating" in names else None
    time_col = names.index("timestamp") if "timestamp" in names else None

    ctx.report.lines_read = sum(1 for line in lines[first + 1 :] if line.strip())
    b = InteractionsBuilder()
    for line_no, fields in _recbole_rows(lines, first, len(names), ctx):
        user, item = fields[user_col], fields[item_col]
        if not user or not item:
            ctx.bad("empty user or item id", line_no)
            continue
        event = _CLICK
        if rating_col is not None:
            rating = _finite_float(fields[rating_col])
            if rating is None:
                ctx.bad("rating is not a number", line_no, repr(fields[rating_col]))
                continue
            event = rating_event(rating)
        if time_col is not None:
            ts = _finite_float(fields[time_col])
            if ts is None:
                ctx.bad("timestamp is not a number", line_no, repr(fields[time_col]))
                continue
        else:
            ts = None
        b.add(user, item, event, ts)

    items_file = Path(item_path) if item_path is not None else file.with_suffix(".item")
    if item_path is not None or items_file.is_file():
        _read_recbole_items(items_file, ctx.report, strict, b)
    return _finish(b, ctx, min_events), ctx.report


def _load_whitespace(
    path: _PathLike,
    fmt: str,
    parse_line: Callable[[list[str], int, _Context, InteractionsBuilder], None],
    min_events: int,
    strict: bool,
) -> tuple[Interactions, LoadReport]:
    """Shared driver of the two whitespace formats: split each non-blank line, hand it over."""
    file, ctx = _start(path, fmt, strict, min_events)
    b = InteractionsBuilder()
    for n, line in enumerate(_read_lines(file), start=1):
        parts = line.split()
        if parts:
            ctx.report.lines_read += 1
            parse_line(parts, n, ctx, b)
    return _finish(b, ctx, min_events), ctx.report


def _sequence_line(parts: list[str], n: int, ctx: _Context, b: InteractionsBuilder) -> None:
    if len(parts) < 2:
        ctx.bad("user without items", n, repr(parts[0]))
        return
    user = parts[0]
    for item in parts[1:]:
        b.add(user, item, _CLICK)


def _pair_line(parts: list[str], n: int, ctx: _Context, b: InteractionsBuilder) -> None:
    if len(parts) != 2:
        ctx.bad("expected 2 fields 'user item'", n, f"got {len(parts)}")
        return
    b.add(parts[0], parts[1], _CLICK)


def load_sequences(
    path: _PathLike, *, min_events: int = 1, strict: bool = False
) -> tuple[Interactions, LoadReport]:
    """Load one-user-per-line sequences ``user item item ...`` (all ``click``, no timestamps).

    A user on several lines gets the lines' items concatenated in file order.
    """
    return _load_whitespace(path, "sequences", _sequence_line, min_events, strict)


def load_pairs(
    path: _PathLike, *, min_events: int = 1, strict: bool = False
) -> tuple[Interactions, LoadReport]:
    """Load one-interaction-per-line ``user item`` pairs (all ``click``, no timestamps)."""
    return _load_whitespace(path, "pairs", _pair_line, min_events, strict)


def _named_columns(header: list[str], path: str, line: int | None) -> dict[str, int]:
    """Column positions by canonical name (:data:`CSV_ALIASES`); ``DataFormatError`` when a
    required one is missing (shared by the CSV and Parquet formats)."""
    lowered = [h.strip().lower() for h in header]
    found: dict[str, int] = {}
    for canon, aliases in CSV_ALIASES.items():  # by the aliases' priority, e.g. user > user_id
        name = next((a for a in aliases if a in lowered), None)
        if name is not None:
            found[canon] = lowered.index(name)
    missing = [c for c in ("user", "item", "timestamp") if c not in found]
    if missing:
        raise DataFormatError(
            f"columns must include user, item, timestamp[, event]; missing {', '.join(missing)} "
            f"(found {','.join(header)!r})",
            path,
            line,
        )
    return found


def load_csv(
    path: _PathLike, *, min_events: int = 1, strict: bool = False
) -> tuple[Interactions, LoadReport]:
    """Load the generic CSV format (header row; see the module docstring and :func:`write_csv`).

    ``timestamps`` are float64 seconds; an unknown event name raises ``DataFormatError``.
    """
    file, ctx = _start(path, "csv", strict, min_events)
    reader = csv.reader(f"{line}\n" for line in _read_lines(file))  # keeps quoted newlines
    cols: dict[str, int] | None = None
    width = 0
    b = InteractionsBuilder()
    for row in reader:
        n = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        if cols is None:
            cols, width = _named_columns(row, ctx.path, n), len(row)
            continue
        ctx.report.lines_read += 1
        if len(row) != width:
            ctx.bad(f"expected {width} comma-separated fields", n, f"got {len(row)}")
            continue
        user, item = row[cols["user"]].strip(), row[cols["item"]].strip()
        if not user or not item:
            ctx.bad("empty user or item id", n)
            continue
        ts = _finite_float(row[cols["timestamp"]])
        if ts is None:
            ctx.bad("timestamp is not a number", n, repr(row[cols["timestamp"]]))
            continue
        event = _CLICK
        if "event" in cols:
            try:
                event = event_code(row[cols["event"]])
            except ValueError as exc:
                raise DataFormatError(str(exc), ctx.path, n) from None
        if "title" in cols and row[cols["title"]] and item not in b.titles:
            b.titles[item] = row[cols["title"]]
        if "genres" in cols and row[cols["genres"]] and item not in b.meta:
            b.meta[item] = {"genres": row[cols["genres"]].split("|")}
        b.add(user, item, event, ts)
    if cols is None:  # pragma: no cover - _read_lines guarantees a non-blank line
        raise DataFormatError("no header row", ctx.path)
    return _finish(b, ctx, min_events), ctx.report


def write_csv(interactions: Interactions, path: _PathLike) -> None:
    """Write ``interactions`` in the generic CSV format that :func:`load_csv` reads back.

    Columns ``user,item,timestamp,event`` (+ ``title`` when items have titles, + ``genres``,
    ``|``-separated, when item metadata has ``genres``); rows user by user in index order, each
    user's events in time order, so loading the file gives back the same indices. Timestamps are
    written exactly (``repr``); without timestamps the positions ``0, 1, ...`` are written. Other
    metadata is not written.
    """
    data = interactions
    with_titles = bool(data.item_titles)
    with_genres = any("genres" in m for m in data.item_meta.values())
    header = ["user", "item", "timestamp", "event"]
    header += ["title"] * with_titles + ["genres"] * with_genres
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        for u in range(data.num_users):
            user = data.users.id(u)
            seq, ev = data.sequences[u], data.events[u]
            times = (
                data.timestamps[u].tolist()
                if data.timestamps is not None
                else [float(k) for k in range(len(seq))]
            )
            for item, code, ts in zip(seq.tolist(), ev.tolist(), times, strict=True):
                row = [user, data.items.id(item), repr(ts), EVENT_NAMES[code]]
                if with_titles:
                    row.append(data.item_titles.get(item, ""))
                if with_genres:
                    row.append("|".join(data.item_meta.get(item, {}).get("genres", [])))
                writer.writerow(row)


def parquet_files(path: _PathLike) -> list[Path]:
    """The Parquet files :func:`load_parquet` reads from ``path``, sorted: ``path`` itself for a
    file; for a folder, its ``*.parquet`` files and those in ``name=value`` partition folders at
    any depth (names starting with ``.`` or ``_`` skipped). Empty when a folder has none."""
    p = Path(path)
    if not p.is_dir():
        return [p]
    found: list[Path] = []
    for child in sorted(p.iterdir()):
        if child.name.startswith((".", "_")):
            continue
        if child.is_dir() and "=" in child.name:
            found += parquet_files(child)
        elif child.is_file() and child.suffix.lower() == PARQUET_SUFFIX:
            found.append(child)
    return found


def _is_parquet_file(path: Path) -> bool:
    """A ``.parquet`` file, or a file starting with ``PAR1``."""
    if path.suffix.lower() == PARQUET_SUFFIX:
        return True
    with open(path, "rb") as fh:
        return fh.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC


@dataclass
class _ParquetColumns:
    """One Parquet file's rows, normalized: ids stripped (``""`` for a null), times float64
    seconds (NaN where null or not finite), event names (``None`` where null), the arrival
    order (None when the file has no such column)."""

    path: str
    users: list[str]
    items: list[str]
    times: npt.NDArray[np.float64]
    events: list[str | None]
    order: npt.NDArray[np.int64] | None


def _read_parquet_file(file: Path) -> _ParquetColumns:
    """The needed columns of one file; ``DataFormatError`` naming the file when it cannot be
    read (corrupt, not Parquet) or lacks a required column or has one of the wrong type."""
    pa = import_optional("pyarrow", "convert", "reading Parquet")
    pq = import_optional("pyarrow.parquet", "convert", "reading Parquet")
    name = os.fspath(file)
    try:
        parquet = pq.ParquetFile(file)
        names = list(parquet.schema_arrow.names)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataFormatError(f"not a readable Parquet file ({exc})", name) from None
    found = _named_columns(names, name, None)
    roles: dict[str, str] = {
        r: names[found[r]] for r in ("user", "item", "timestamp", "event") if r in found
    }
    if ARRIVAL_COLUMN in names:
        roles["order"] = ARRIVAL_COLUMN
    try:
        table = parquet.read(columns=sorted(set(roles.values())))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataFormatError(f"not a readable Parquet file ({exc})", name) from None

    def checked(role: str, allowed: Callable[[Any], bool], what: str) -> Any:
        column = table.column(roles[role])
        if not allowed(column.type):
            problem = f"column {roles[role]!r} must hold {what}, not {column.type}"
            raise DataFormatError(problem, name)
        return column

    def is_text(kind: Any) -> bool:
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))

    def is_id(kind: Any) -> bool:
        return is_text(kind) or bool(pa.types.is_integer(kind))

    def is_time(kind: Any) -> bool:
        return bool(
            pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_timestamp(kind)
        )

    ids = "strings or integers"
    users, items = (
        [("" if v is None else str(v)).strip() for v in checked(r, is_id, ids).to_pylist()]
        for r in ("user", "item")
    )
    time_column = checked("timestamp", is_time, "numbers of seconds or timestamps")
    if pa.types.is_timestamp(time_column.type):
        per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[time_column.type.unit]
        time_column = time_column.cast(pa.int64())
        times = time_column.to_numpy(zero_copy_only=False).astype(np.float64) / per_second
    else:
        times = time_column.to_numpy(zero_copy_only=False).astype(np.float64)
    times[~np.isfinite(times)] = np.nan  # nulls are NaN already
    if "event" in roles:
        events = checked("event", is_text, "event names").to_pylist()
    else:
        events = [EVENT_NAMES[_CLICK]] * table.num_rows
    order = None
    if "order" in roles:
        column = checked("order", lambda kind: pa.types.is_integer(kind), "integers")
        if column.null_count:
            raise DataFormatError(f"column {ARRIVAL_COLUMN!r} has nulls", name)
        order = column.to_numpy(zero_copy_only=False).astype(np.int64)
    return _ParquetColumns(name, users, items, times, events, order)


def _arrival_permutation(parts: list[_ParquetColumns], root: str) -> npt.NDArray[np.int64] | None:
    """The row permutation that sorts every file's rows by :data:`ARRIVAL_COLUMN`, or None when
    no file has it; ``DataFormatError`` when only some have it or it repeats a value."""
    orders = [cols.order for cols in parts]
    if all(order is None for order in orders):
        return None
    if any(order is None for order in orders):
        raise DataFormatError(
            f"some files have an {ARRIVAL_COLUMN!r} column and some do not (mixed exports?)", root
        )
    order = np.concatenate([o for o in orders if o is not None])
    permutation = np.argsort(order, kind="stable")
    ranked = order[permutation]
    if ranked.size and bool((ranked[1:] == ranked[:-1]).any()):
        raise DataFormatError(
            f"the {ARRIVAL_COLUMN!r} column repeats values (two exports in one folder?)", root
        )
    return permutation


def load_parquet(
    path: _PathLike, *, min_events: int = 1, strict: bool = False
) -> tuple[Interactions, LoadReport]:
    """Load a Parquet file or a folder of them (see the module docstring), e.g. the folder
    ``pocketrec export-feedback --format parquet`` writes. Every file is read before anything is
    built, so a corrupt file raises ``DataFormatError`` naming it and nothing is half-loaded.
    ``timestamps`` are float64 seconds; an unknown event name raises ``DataFormatError``."""
    if min_events < 1:
        raise ValueError(f"min_events must be >= 1, got {min_events}")
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no such data file or directory: {os.fspath(root)!r}")
    files = parquet_files(root)
    if not files:
        empty = " (an empty export)" if (root / SCHEMA_FILE).is_file() else ""
        raise DataFormatError(f"no valid interactions: no .parquet files{empty}", os.fspath(root))
    report = LoadReport(os.fspath(root), "parquet")
    parts = [_read_parquet_file(f) for f in files]
    permutation = _arrival_permutation(parts, os.fspath(root))
    starts = np.cumsum([0] + [len(cols.users) for cols in parts])
    users = [v for cols in parts for v in cols.users]
    items = [v for cols in parts for v in cols.items]
    times = np.concatenate([cols.times for cols in parts]).tolist()
    events = [v for cols in parts for v in cols.events]
    codes = {name: code for code, name in enumerate(EVENT_NAMES)}
    report.lines_read = len(users)

    def skip(k: int, reason: str, detail: str = "") -> None:
        """Skip (or, strict, raise on) global row ``k``, named by its file and 1-based row."""
        f = int(np.searchsorted(starts, k, side="right")) - 1
        _Context(parts[f].path, report, strict).bad(reason, k - int(starts[f]) + 1, detail)

    b = InteractionsBuilder()
    for k in range(len(users)) if permutation is None else permutation.tolist():
        user, item, ts, event = users[k], items[k], times[k], events[k]
        if not user or not item:
            skip(k, "empty user or item id")
        elif ts != ts:  # NaN: null or not finite
            skip(k, "timestamp is missing or not finite")
        elif event not in codes:
            try:
                event_code(event if event is not None else "")
            except ValueError as exc:  # the same message as the CSV loader's
                f = int(np.searchsorted(starts, k, side="right")) - 1
                raise DataFormatError(str(exc), parts[f].path, k - int(starts[f]) + 1) from None
        else:
            b.add(user, item, codes[event], ts)
    return _finish(b, _Context(os.fspath(root), report, strict), min_events), report


# --------------------------------------------------------------------------- dispatch

_LOADERS: dict[str, Callable[..., tuple[Interactions, LoadReport]]] = {
    "recbole": load_recbole,
    "sequences": load_sequences,
    "pairs": load_pairs,
    "csv": load_csv,
    "parquet": load_parquet,
}


def resolve_data_file(path: _PathLike) -> Path:
    """``path`` itself for a file; for a directory, its single data file.

    A directory must hold exactly one file ending in ``.inter``, ``.txt`` or ``.csv`` (files named
    ``README*``/``LICENSE*`` are ignored); otherwise ``DataFormatError`` lists what it found.
    ``FileNotFoundError`` when the path does not exist.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such data file or directory: {os.fspath(p)!r}")
    if not p.is_dir():
        return p
    found = sorted(
        f
        for f in p.iterdir()
        if f.is_file()
        and f.suffix.lower() in DATA_SUFFIXES
        and not f.name.lower().startswith(("readme", "license"))
    )
    if len(found) != 1:
        what = ", ".join(f.name for f in found) or "none"
        raise DataFormatError(
            f"expected exactly one data file ({', '.join('*' + s for s in DATA_SUFFIXES)}) "
            f"in the directory, found {what}",
            os.fspath(p),
        )
    return found[0]


def detect_format(path: _PathLike) -> str:
    """Guess the format of a data file (one of :data:`FORMATS`).

    A folder of Parquet files (or with only a ``_common_metadata`` schema file: an empty
    export), a ``.parquet`` file or one starting with ``PAR1`` -> ``parquet``;
    ``.inter`` or a RecBole header -> ``recbole``; ``.csv`` or a first line starting with ``user``
    that has commas -> ``csv``; otherwise, over the first :data:`DETECT_LINES` non-empty lines: all
    with exactly 2 whitespace-separated tokens -> ``pairs``, some with more -> ``sequences``.
    Anything else raises ``DataFormatError`` listing the formats.
    """
    if Path(path).is_dir() and (parquet_files(path) or (Path(path) / SCHEMA_FILE).is_file()):
        return "parquet"
    file = resolve_data_file(path)
    if _is_parquet_file(file):
        return "parquet"
    suffix = file.suffix.lower()
    if suffix == ".inter":
        return "recbole"
    if suffix == ".csv":
        return "csv"
    lines = _head_lines(file, DETECT_LINES)
    first = lines[0]
    fields = _recbole_fields(first)
    if fields is not None and "user_id" in fields and "item_id" in fields:
        return "recbole"
    if first.lower().startswith("user") and "," in first:
        return "csv"
    counts = [len(line.split()) for line in lines]
    if all(c == 2 for c in counts):
        return "pairs"
    if any(c > 2 for c in counts) and not any("," in line for line in lines):
        return "sequences"
    raise DataFormatError(
        "cannot tell the format from the first lines; pass format= one of "
        f"{', '.join(FORMATS)} (recbole: tab-separated 'name:type' header; csv: header "
        "'user,item,timestamp[,event]'; sequences: 'user item item ...'; pairs: 'user item')",
        os.fspath(file),
    )


def load(
    path: _PathLike,
    format: str = "auto",
    *,
    min_events: int = 1,
    strict: bool = False,
) -> tuple[Interactions, LoadReport]:
    """Load interactions from a file, a directory holding one data file, or a folder of Parquet
    files (hive partitions included).

    ``format``: ``"auto"`` or one of :data:`FORMATS` (anything else: ``ValueError``).
    ``min_events``: users with fewer events are dropped (counted in the report).
    ``strict``: raise on the first malformed line instead of skipping and counting it.
    Returns ``(interactions, report)``.
    """
    if format != "auto" and format not in _LOADERS:
        raise ValueError(f"unknown format {format!r}; expected one of auto, {', '.join(FORMATS)}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "parquet":  # a file or a whole folder of them
        return load_parquet(path, min_events=min_events, strict=strict)
    file = resolve_data_file(path)
    return _LOADERS[fmt](file, min_events=min_events, strict=strict)
