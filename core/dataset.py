"""The in-memory dataset every loader returns, and the report of what a loader skipped.

:class:`Interactions` holds one time-ordered sequence per user:

- ``sequences[u]``: ``int32`` item indices (into ``items``), oldest first;
- ``events[u]``: ``int8`` event codes (:mod:`pocketrec.core.events`), same length;
- ``timestamps[u]``: ``float64`` seconds (Unix time for real data), non-decreasing, same length —
  or ``timestamps is None`` when the source has no times (order is then the file order).

Index conventions (the same for every loader and for the synthetic generator, all built by
:class:`InteractionsBuilder`), after dropped users were removed:

- users are indexed in order of first appearance in the source (file order);
- items are indexed in order of first appearance in the time-ordered sequences, reading users in
  index order (for files grouped by user, such as the Amazon ones, that is the file order).

Indices are thus deterministic and independent of how the lines of a user's events were
interleaved with other users'; ``items`` only holds items that occur in at least one sequence, and
writing the data as CSV user by user and reading it back gives the same indices.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from pocketrec.core.events import EVENT_DTYPE, EVENT_NAMES, validate_codes
from pocketrec.core.idmap import IdMap

_S = TypeVar("_S", bound=np.generic)
_V = TypeVar("_V")

ITEM_DTYPE = np.int32
"""dtype of item-index sequences."""
TIME_DTYPE = np.float64
"""dtype of timestamps (seconds)."""


@dataclass(eq=False)
class Interactions:
    """Per-user event sequences in time order (see the module docstring for shapes and dtypes).

    ``item_titles`` maps item index -> readable title, ``item_meta`` item index -> extra fields
    (e.g. ``{"release_year": 1995, "genres": ["Comedy"]}``); both only hold items that have them.
    """

    users: IdMap
    items: IdMap
    sequences: list[npt.NDArray[np.int32]]
    events: list[npt.NDArray[np.int8]]
    timestamps: list[npt.NDArray[np.float64]] | None = None
    item_titles: dict[int, str] = field(default_factory=dict)
    item_meta: dict[int, dict[str, Any]] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        """Check that the parts agree (``ValueError`` otherwise); dtypes are checked, not cast."""
        n = len(self.users)
        if len(self.sequences) != n or len(self.events) != n:
            raise ValueError(
                f"{n} users but {len(self.sequences)} sequences and {len(self.events)} event arrays"
            )
        if self.timestamps is not None and len(self.timestamps) != n:
            raise ValueError(f"{n} users but {len(self.timestamps)} timestamp arrays")
        for u in range(n):
            seq, ev = self.sequences[u], self.events[u]
            if seq.dtype != ITEM_DTYPE or ev.dtype != EVENT_DTYPE:
                raise ValueError(f"user {u}: sequences must be int32 and events int8")
            if seq.shape != ev.shape or seq.ndim != 1:
                raise ValueError(f"user {u}: sequence and events must be 1-D of the same length")
            if self.timestamps is not None:
                ts = self.timestamps[u]
                if ts.dtype != TIME_DTYPE or ts.shape != seq.shape:
                    raise ValueError(f"user {u}: timestamps must be float64, same length")
        if n:
            all_items = np.concatenate(self.sequences)
            if all_items.size and (all_items.min() < 0 or all_items.max() >= len(self.items)):
                raise ValueError(f"item indices must be in 0..{len(self.items) - 1}")
            validate_codes(np.concatenate(self.events))

    @property
    def num_users(self) -> int:
        """Number of users (= number of sequences)."""
        return len(self.users)

    @property
    def num_items(self) -> int:
        """Number of items in the catalog (``items``)."""
        return len(self.items)

    @property
    def num_interactions(self) -> int:
        """Total number of events over all users."""
        return int(sum(len(s) for s in self.sequences))

    def item_popularity(self) -> npt.NDArray[np.int64]:
        """``int64 [num_items]``: how many events (of any type) each item has."""
        if not self.sequences:
            return np.zeros(self.num_items, dtype=np.int64)
        return np.bincount(np.concatenate(self.sequences), minlength=self.num_items).astype(
            np.int64
        )

    def event_counts(self) -> dict[str, int]:
        """Number of events per event name (only names that occur)."""
        if not self.events:
            return {}
        counts = np.bincount(np.concatenate(self.events).astype(np.int64))
        return {EVENT_NAMES[c]: int(k) for c, k in enumerate(counts) if k}

    def title(self, item: int) -> str:
        """Readable title of an item index, falling back to its external id."""
        return self.item_titles.get(item, self.items.id(item))

    def summary(self) -> str:
        """A few human-readable lines: sizes, event mix, sequence lengths, time range."""
        lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
        head = f"{self.name or 'interactions'}: {self.num_users:,} users, "
        head += f"{self.num_items:,} items, {self.num_interactions:,} interactions"
        lines = [head]
        if lengths.size:
            lines.append(
                f"  sequence length: min {lengths.min()}, median {float(np.median(lengths)):g}, "
                f"mean {lengths.mean():.1f}, max {lengths.max()}"
            )
        mix = ", ".join(f"{k} {v:,}" for k, v in self.event_counts().items())
        if mix:
            lines.append(f"  events: {mix}")
        if self.timestamps is not None and self.num_interactions:
            ts = np.concatenate(self.timestamps)
            first, last = (_fmt_time(float(t)) for t in (ts.min(), ts.max()))
            lines.append(f"  time: {first} .. {last}")
        else:
            lines.append("  time: none (file order)")
        if self.item_titles:
            lines.append(f"  titles: {len(self.item_titles):,} items")
        return "\n".join(lines)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Interactions):
            return NotImplemented
        if (self.timestamps is None) != (other.timestamps is None):
            return False
        return (
            self.users == other.users
            and self.items == other.items
            and _same_arrays(self.sequences, other.sequences)
            and _same_arrays(self.events, other.events)
            and _same_arrays(self.timestamps or [], other.timestamps or [])
            and self.item_titles == other.item_titles
            and self.item_meta == other.item_meta
        )

    __hash__ = None  # type: ignore[assignment]  # mutable


class InteractionsBuilder:
    """Collects interactions one at a time (any order) and builds :class:`Interactions`.

    The one place where the index and ordering conventions live (see the module docstring);
    each user's events are sorted by (timestamp, insertion order), or kept in insertion order
    when there are no timestamps.
    ``titles`` / ``meta`` are keyed by external item id and carried over for kept items.
    """

    def __init__(self) -> None:
        self._user_ids: dict[str, int] = {}
        self._item_ids: dict[str, int] = {}
        self._users: list[int] = []
        self._items: list[int] = []
        self._events: list[int] = []
        self._times: list[float] = []
        self.titles: dict[str, str] = {}
        self.meta: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._users)

    def add(self, user: str, item: str, event: int, timestamp: float | None = None) -> None:
        """Append one interaction; give a ``timestamp`` (seconds) for all of them or for none."""
        self._users.append(self._user_ids.setdefault(user, len(self._user_ids)))
        self._items.append(self._item_ids.setdefault(item, len(self._item_ids)))
        self._events.append(event)
        if timestamp is not None:
            self._times.append(timestamp)

    def build(
        self, *, min_events: int = 1, name: str = "", report: LoadReport | None = None
    ) -> Interactions:
        """The dataset, without users that have fewer than ``min_events`` interactions.

        Dropped users are counted in ``report`` when one is given.
        """
        if self._times and len(self._times) != len(self._users):
            raise ValueError("give a timestamp for every interaction or for none")
        u = np.asarray(self._users, dtype=np.int64)
        i = np.asarray(self._items, dtype=np.int64)
        e = np.asarray(self._events, dtype=EVENT_DTYPE)
        t = np.asarray(self._times, dtype=TIME_DTYPE) if self._times else None

        counts = np.bincount(u, minlength=len(self._user_ids))
        keep_user = counts >= min_events
        if report is not None:
            report.min_events = min_events
            report.dropped_users = int(np.count_nonzero(~keep_user))
            report.dropped_events = int(counts[~keep_user].sum())
        if not keep_user.all():
            rows = keep_user[u]
            u, i, e = u[rows], i[rows], e[rows]
            t = None if t is None else t[rows]
        users = IdMap(n for n, k in zip(self._user_ids, keep_user, strict=True) if k)
        u = np.cumsum(keep_user, dtype=np.int64)[u] - 1  # dense, order kept

        if t is not None:  # by user, then time, then insertion order (both sorts are stable)
            order = np.argsort(t, kind="stable")
            order = order[np.argsort(u[order], kind="stable")]
        else:
            order = np.argsort(u, kind="stable")
        i, e = i[order], e[order]
        t = None if t is None else t[order]
        # items: first appearance in the time-ordered sequences, users in index order
        provisional, first = np.unique(i, return_index=True)
        appearance = provisional[np.argsort(first)]
        dense = np.zeros(len(self._item_ids), dtype=np.int64)
        dense[appearance] = np.arange(len(appearance))
        i = dense[i]
        names = list(self._item_ids)
        items = IdMap(names[p] for p in appearance.tolist())
        bounds = np.cumsum(np.bincount(u, minlength=len(users)))[:-1]
        unused_meta = len(self.meta.keys() - set(items))
        if report is not None and unused_meta:
            report.notes.append(f"{unused_meta} items have metadata but no interactions (left out)")
        return Interactions(
            users=users,
            items=items,
            sequences=_pieces(i.astype(ITEM_DTYPE), bounds),
            events=_pieces(e, bounds),
            timestamps=None if t is None else _pieces(t, bounds),
            item_titles=_by_index(items, self.titles),
            item_meta=_by_index(items, self.meta),
            name=name,
        )


def _pieces(array: npt.NDArray[_S], bounds: npt.NDArray[np.int64]) -> list[npt.NDArray[_S]]:
    """``array`` cut before each of ``bounds`` (no pieces at all when ``array`` is empty)."""
    return list(np.split(array, bounds)) if array.size else []


def _by_index(items: IdMap, by_id: dict[str, _V]) -> dict[int, _V]:
    """``by_id`` re-keyed by item index, sorted, for the items ``items`` holds."""
    found = ((items.get(k, -1), v) for k, v in by_id.items())
    return dict(sorted((k, v) for k, v in found if k >= 0))


def _same_arrays(mine: Sequence[npt.NDArray[Any]], theirs: Sequence[npt.NDArray[Any]]) -> bool:
    """Same number of arrays, pairwise equal in dtype, shape and values."""
    return len(mine) == len(theirs) and all(
        a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(mine, theirs, strict=True)
    )


def _fmt_time(seconds: float) -> str:
    """ISO date of a Unix time, or the raw number when it is not a plausible date."""
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        return f"{seconds:g}"


@dataclass
class LoadReport:
    """What a loader read and what it skipped, by reason.

    ``skipped[reason]`` counts skipped input lines; ``examples[reason]`` keeps the first few
    1-based line numbers; ``dropped_users`` counts users removed by ``min_events``
    (``dropped_events`` their events).
    """

    path: str
    format: str
    lines_read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[int]] = field(default_factory=dict)
    dropped_users: int = 0
    dropped_events: int = 0
    min_events: int = 1
    notes: list[str] = field(default_factory=list)

    MAX_EXAMPLES = 5

    def skip(self, reason: str, line: int) -> None:
        """Count one skipped line (1-based ``line``) under ``reason``."""
        self.skipped[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < self.MAX_EXAMPLES:
            kept.append(line)

    @property
    def total_skipped(self) -> int:
        """Number of skipped lines over all reasons."""
        return sum(self.skipped.values())

    @property
    def clean(self) -> bool:
        """True when nothing was skipped or dropped."""
        return self.total_skipped == 0 and self.dropped_users == 0

    def summary(self) -> str:
        """One line per fact: what was read, each skip reason with example lines, drops."""
        lines = [f"{self.path} ({self.format}): {self.lines_read:,} lines read"]
        for reason, count in sorted(self.skipped.items()):
            where = ", ".join(str(n) for n in self.examples.get(reason, []))
            lines.append(f"  skipped {count:,} lines: {reason} (e.g. line {where})")
        if self.dropped_users:
            lines.append(
                f"  dropped {self.dropped_users:,} users with < {self.min_events} events "
                f"({self.dropped_events:,} events)"
            )
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)
