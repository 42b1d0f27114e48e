"""Per-user model state (table ``user_state``): what a restart needs to resume the same vector.

A user's row holds the step model's recurrent ``state`` (float32 ``[H]``), optionally the last
``user_vector`` (float32 ``[D + 1]``) so ranking can resume without running the model, the
``model_version`` they belong to and the number of events folded in. Vectors are stored as
little-endian float32 bytes, so they read back bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlite_utils

from pocketrec.core.errors import StorageError
from pocketrec.storage import validation as check

MAX_VECTOR_LENGTH = 65_536
"""Longest accepted state or user vector (elements)."""

_STORED = np.dtype("<f4")


@dataclass(frozen=True)
class SavedUserState:
    """A user's saved row in ``user_state`` (what survives a restart); ``updated_at`` is seconds
    since the epoch (UTC). The in-memory state the runtime updates per event is
    :class:`pocketrec.runtime.users.LiveUserState`."""

    user_id: str
    state: npt.NDArray[np.float32]
    user_vector: npt.NDArray[np.float32] | None
    model_version: int
    event_count: int
    updated_at: float


def vector(name: str, value: object) -> bytes:
    """A finite, non-empty 1-D float32 array as little-endian bytes (``ValueError`` otherwise).

    Only float32 is accepted, so nothing is rounded on the way in.
    """
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name} must be a numpy float32 array, got {check.describe(value)}")
    if value.dtype.kind != "f" or value.dtype.itemsize != 4:
        raise ValueError(f"{name} must have dtype float32, got {value.dtype}")
    if value.ndim != 1 or not 1 <= value.size <= MAX_VECTOR_LENGTH:
        raise ValueError(
            f"{name} must be 1-D with 1..{MAX_VECTOR_LENGTH} elements, got shape {value.shape}"
        )
    if not np.isfinite(value).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return value.astype(_STORED, copy=False).tobytes()


def save(
    db: sqlite_utils.Database,
    user_id: str,
    state: bytes,
    user_vector: bytes | None,
    *,
    model_version: int,
    event_count: int,
    now: float,
) -> None:
    """Insert or replace the user's row (arguments already checked)."""
    db.conn.execute(
        "INSERT OR REPLACE INTO user_state "
        "(user_id, model_version, dim, state, user_vector, event_count, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (user_id, model_version, len(state) // 4, state, user_vector, event_count, now),
    )


def load(db: sqlite_utils.Database, user_id: str) -> SavedUserState | None:
    """The user's saved state, or ``None``."""
    row = db.conn.execute(
        "SELECT user_id, state, user_vector, model_version, event_count, updated_at "
        "FROM user_state WHERE user_id = ?",
        (user_id,),
    ).fetchone()
    if row is None:
        return None
    user, state, user_vector, model_version, event_count, updated_at = row
    return SavedUserState(
        user_id=user,
        state=_decode(user, state),
        user_vector=None if user_vector is None else _decode(user, user_vector),
        model_version=model_version,
        event_count=event_count,
        updated_at=updated_at,
    )


def _decode(user_id: str, blob: object) -> npt.NDArray[np.float32]:
    if not isinstance(blob, bytes) or len(blob) % 4:
        raise StorageError(f"user_state of {user_id!r}: a stored vector is not float32 bytes")
    return np.frombuffer(blob, dtype=_STORED).astype(np.float32)  # a writable native copy


def delete(db: sqlite_utils.Database, user_id: str) -> bool:
    """Delete the user's row; True if there was one."""
    return db.conn.execute("DELETE FROM user_state WHERE user_id = ?", (user_id,)).rowcount > 0


def export(state: SavedUserState) -> dict[str, Any]:
    """The state as JSON-serializable data (vectors as lists of floats, exact as float32)."""
    return {
        "model_version": state.model_version,
        "event_count": state.event_count,
        "updated_at": state.updated_at,
        "state": state.state.tolist(),
        "user_vector": None if state.user_vector is None else state.user_vector.tolist(),
    }
