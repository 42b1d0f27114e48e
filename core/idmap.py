"""External string ids <-> dense integer indices ``0..n-1``.

An :class:`IdMap` assigns indices in insertion order and never forgets an id. It is saved as a JSON
file holding one list of strings (the id of index ``i`` at position ``i``), written as UTF-8; the
round-trip is exact for any Python string (ids that cannot be encoded as UTF-8, such as lone
surrogates, are written with JSON ``\\u`` escapes instead).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from pocketrec.core.errors import DataFormatError

_T = TypeVar("_T")


class UnknownIdError(KeyError):
    """An id, or an index, that the map does not hold. The message names it."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class IdMap:
    """Bidirectional map between string ids and indices ``0..len-1`` (insertion order)."""

    __slots__ = ("_ids", "_index")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        """Build a map holding ``ids`` in order; ``ValueError`` naming the first duplicate."""
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        for id_ in ids:
            if id_ in self._index:
                raise ValueError(f"duplicate id {id_!r} at index {len(self._ids)}")
            self.add(id_)

    def add(self, id_: str) -> int:
        """Index of ``id_``, appended first if it is new; ``TypeError`` unless it is a str."""
        found = self._index.get(id_)
        if found is not None:
            return found
        if not isinstance(id_, str):
            raise TypeError(f"ids must be str, got {type(id_).__name__} {id_!r}")
        index = len(self._ids)
        self._ids.append(id_)
        self._index[id_] = index
        return index

    def index(self, id_: str) -> int:
        """Index of ``id_``; :class:`UnknownIdError` (a ``KeyError``) naming it if absent."""
        try:
            return self._index[id_]
        except KeyError:
            raise UnknownIdError(f"unknown id {id_!r} (map holds {len(self)} ids)") from None

    def id(self, index: int) -> str:
        """Id at ``index`` (``0 <= index < len``); :class:`UnknownIdError` naming it otherwise."""
        if not 0 <= index < len(self._ids):
            raise UnknownIdError(f"index {index} out of range for a map of {len(self)} ids")
        return self._ids[index]

    def get(self, id_: str, default: _T) -> int | _T:
        """Index of ``id_``, or ``default`` when it is absent."""
        return self._index.get(id_, default)

    @property
    def ids(self) -> list[str]:
        """All ids, in index order (a copy)."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdMap):
            return NotImplemented
        return self._ids == other._ids

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        head = ", ".join(repr(i) for i in self._ids[:3])
        more = ", ..." if len(self) > 3 else ""
        return f"IdMap({len(self)} ids: [{head}{more}])"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ids as a JSON list of strings (UTF-8), index order."""
        try:
            text = json.dumps(self._ids, ensure_ascii=False)
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: escape them, the JSON stays exact
            data = json.dumps(self._ids, ensure_ascii=True).encode("ascii")
        Path(path).write_bytes(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> IdMap:
        """Read a file written by :meth:`save`.

        Raises :class:`~pocketrec.core.errors.DataFormatError` (a ``ValueError``) when the file is
        not JSON, not a list of strings, or holds a duplicate (the message names it).
        """
        name = os.fspath(path)
        try:
            value = json.loads(Path(path).read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataFormatError(f"not a JSON id list ({exc})", name) from None
        if not isinstance(value, list):
            kind = type(value).__name__
            raise DataFormatError(f"expected a JSON list of strings, got {kind}", name)
        for position, item in enumerate(value):
            if not isinstance(item, str):
                raise DataFormatError(f"entry {position} is {item!r}, not a string", name)
        try:
            return cls(value)
        except ValueError as exc:
            raise DataFormatError(str(exc), name) from None
