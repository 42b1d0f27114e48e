"""The catalog cache (table ``catalog``): what the device knows about each item.

An update (upserted items, removed ids, or a full replacement) is checked completely and then
applied in one transaction: readers see the catalog before or after it, never half of it. The
availability mask for ranking is computed by one query, in the item order the caller gives (the
bundle's item order), with unknown items unavailable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlite_utils

from pocketrec.storage import validation as check

MAX_TITLE_BYTES = 4096
"""Longest item title, in UTF-8 bytes."""

MAX_METADATA_BYTES = 32 * 1024
"""Largest item metadata, in bytes of UTF-8 JSON."""


@dataclass(frozen=True)
class CatalogItem:
    """One cached item. ``metadata`` is a JSON object; ``updated_at`` is seconds since the epoch
    (UTC): when writing, ``None`` means the time of the update."""

    item_id: str
    title: str | None = None
    metadata: Mapping[str, Any] | None = None
    available: bool = True
    updated_at: float | None = None


@dataclass(frozen=True)
class CatalogUpdate:
    """What an update did: items inserted or replaced, and items removed."""

    upserted: int
    removed: int


@dataclass(frozen=True)
class PreparedUpdate:
    """A checked update, ready to apply."""

    rows: list[dict[str, Any]]
    removed: list[str]
    replace: bool


def prepare(
    items: Iterable[CatalogItem], removed: Iterable[str], *, replace: bool, now: float
) -> PreparedUpdate:
    """Check every item and id (``ValueError`` naming ``items[i].field``) before any write."""
    if not isinstance(replace, bool):
        raise ValueError(f"replace must be a bool, got {check.describe(replace)}")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(_iterable("items", items)):
        name = f"items[{i}]"
        if not isinstance(item, CatalogItem):
            raise ValueError(f"{name} must be a CatalogItem, got {check.describe(item)}")
        item_id = check.identifier(f"{name}.item_id", item.item_id)
        if item_id in seen:
            raise ValueError(f"{name}.item_id {item_id!r} appears twice in the update")
        seen.add(item_id)
        if not isinstance(item.available, bool):
            raise ValueError(f"{name}.available must be a bool, got {item.available!r}")
        rows.append(
            {
                "item_id": item_id,
                "title": check.optional_text(
                    f"{name}.title", item.title, max_bytes=MAX_TITLE_BYTES
                ),
                "metadata": check.json_object(
                    f"{name}.metadata", item.metadata, max_bytes=MAX_METADATA_BYTES
                ),
                "available": int(item.available),
                "updated_at": now
                if item.updated_at is None
                else check.timestamp(f"{name}.updated_at", item.updated_at),
            }
        )
    gone = [check.identifier(f"remove[{i}]", v) for i, v in enumerate(_iterable("remove", removed))]
    both = seen.intersection(gone)
    if both:
        raise ValueError(f"item {sorted(both)[0]!r} is both updated and removed")
    if replace and gone:
        raise ValueError("remove must be empty when replace=True (unlisted items are removed)")
    return PreparedUpdate(rows, gone, replace)


def _iterable(name: str, value: object) -> Iterable[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be an iterable, got {check.describe(value)}")
    return value


def apply(db: sqlite_utils.Database, update: PreparedUpdate) -> CatalogUpdate:
    """Apply a prepared update (inside the caller's transaction)."""
    conn = db.conn
    if update.replace:
        listed = json.dumps([row["item_id"] for row in update.rows])
        removed = conn.execute(
            "DELETE FROM catalog WHERE item_id NOT IN (SELECT value FROM json_each(?))", (listed,)
        ).rowcount
    else:
        removed = conn.executemany(
            "DELETE FROM catalog WHERE item_id = ?", [(item_id,) for item_id in update.removed]
        ).rowcount
    # Plain SQL, not sqlite_utils' upsert_all: when its capability probe (a CREATE TABLE inside
    # this transaction) fails, e.g. on a full disk, it falls back to INSERT OR IGNORE + UPDATE,
    # which silently skips rows of a table with NOT NULL columns instead of raising.
    conn.executemany(
        "INSERT INTO catalog (item_id, title, metadata, available, updated_at) "
        "VALUES (:item_id, :title, :metadata, :available, :updated_at) "
        "ON CONFLICT (item_id) DO UPDATE SET title = excluded.title, "
        "metadata = excluded.metadata, available = excluded.available, "
        "updated_at = excluded.updated_at",
        update.rows,
    )
    return CatalogUpdate(upserted=len(update.rows), removed=max(removed, 0))


def item_ids(value: object) -> list[str]:
    """The ids to build a mask for, as a list (``ValueError`` unless every one is a ``str``)."""
    ids = list(_iterable("item_ids", value))
    for i, item_id in enumerate(ids):
        if not isinstance(item_id, str):
            raise ValueError(f"item_ids[{i}] must be a str, got {check.describe(item_id)}")
    return ids


def availability_mask(db: sqlite_utils.Database, item_ids: list[str]) -> npt.NDArray[np.bool_]:
    """Boolean ``[len(item_ids)]``: True where the item is cached and available."""
    mask = np.zeros(len(item_ids), dtype=np.bool_)
    cursor = db.conn.execute(
        "SELECT j.key FROM json_each(?) AS j JOIN catalog AS c ON c.item_id = j.value "
        "WHERE c.available = 1",
        (json.dumps(item_ids),),
    )
    positions = np.fromiter((row[0] for row in cursor), dtype=np.int64)
    mask[positions] = True
    return mask


def set_availability(
    db: sqlite_utils.Database, item_ids: list[str], *, available: bool, now: float
) -> None:
    """Mark ``item_ids`` available or not, keeping their title and metadata. Marking an item
    unavailable caches it (a row without title or metadata) when it is not cached yet; marking
    an uncached item available changes nothing."""
    rows = [(item_id, now) for item_id in item_ids]
    if available:
        db.conn.executemany(
            "UPDATE catalog SET available = 1, updated_at = ?2 WHERE item_id = ?1", rows
        )
    else:
        db.conn.executemany(
            "INSERT INTO catalog (item_id, available, updated_at) VALUES (?1, 0, ?2) "
            "ON CONFLICT (item_id) DO UPDATE SET available = 0, updated_at = excluded.updated_at",
            rows,
        )


def unavailable(db: sqlite_utils.Database) -> list[str]:
    """Ids of the cached items marked unavailable, sorted."""
    rows = db.conn.execute("SELECT item_id FROM catalog WHERE available = 0 ORDER BY item_id")
    return [row[0] for row in rows]


def get(db: sqlite_utils.Database, item_id: str) -> CatalogItem | None:
    """The cached item, or ``None``."""
    row = db.conn.execute(
        "SELECT item_id, title, metadata, available, updated_at FROM catalog WHERE item_id = ?",
        (item_id,),
    ).fetchone()
    if row is None:
        return None
    item, title, metadata, available, updated_at = row
    return CatalogItem(
        item_id=item,
        title=title,
        metadata=json.loads(metadata) if metadata is not None else None,
        available=bool(available),
        updated_at=updated_at,
    )


def count(db: sqlite_utils.Database, *, available_only: bool) -> int:
    """Number of cached items (only the available ones with ``available_only``)."""
    table = db.table("catalog")
    return table.count_where("available = 1") if available_only else table.count
