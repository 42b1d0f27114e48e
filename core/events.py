"""Event types: the small, fixed registry of what a user can do to an item.

The integer codes are part of the bundle format (they are stored in data files and fed to the
on-device model as an input), so they are stable and must never be reordered; new types may only
be appended:

- 0 ``view``      positive
- 1 ``click``     positive
- 2 ``purchase``  positive
- 3 ``like``      positive
- 4 ``dislike``   negative
- 5 ``dismiss``   negative

Event arrays are ``int8`` (:data:`EVENT_DTYPE`).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt

EVENT_DTYPE = np.int8
"""dtype of every array of event codes."""


class EventType(IntEnum):
    """Event codes (stable; part of the bundle format)."""

    VIEW = 0
    CLICK = 1
    PURCHASE = 2
    LIKE = 3
    DISLIKE = 4
    DISMISS = 5


EVENT_NAMES: tuple[str, ...] = tuple(e.name.lower() for e in EventType)
"""Event names indexed by code: ``EVENT_NAMES[1] == "click"``."""

NEGATIVE_EVENTS: frozenset[EventType] = frozenset({EventType.DISLIKE, EventType.DISMISS})
"""Event types that are negative feedback (the user rejected the item)."""

_CODE_BY_NAME: dict[str, int] = {name: code for code, name in enumerate(EVENT_NAMES)}
_NEGATIVE_CODES = np.array(sorted(int(e) for e in NEGATIVE_EVENTS), dtype=EVENT_DTYPE)


def event_code(name: str) -> int:
    """Return the code of an event name (case and surrounding spaces ignored).

    Raises ``ValueError("unknown event type 'x'; expected one of view, click, ...")``.
    """
    code = _CODE_BY_NAME.get(name.strip().lower())
    if code is None:
        raise ValueError(f"unknown event type {name!r}; expected one of {', '.join(EVENT_NAMES)}")
    return code


def event_name(code: int) -> str:
    """Return the name of an event code; ``ValueError`` for a code outside the registry."""
    if not 0 <= int(code) < len(EVENT_NAMES):
        raise ValueError(f"unknown event code {code}; expected 0..{len(EVENT_NAMES) - 1}")
    return EVENT_NAMES[int(code)]


def is_negative(code: int) -> bool:
    """True when the event code is negative feedback (``dislike`` or ``dismiss``)."""
    return int(code) in _NEGATIVE_CODES


def negative_mask(codes: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Boolean array, same shape as ``codes``: True where the event is negative feedback."""
    return np.isin(np.asarray(codes), _NEGATIVE_CODES)


def validate_codes(codes: npt.NDArray[Any]) -> None:
    """Raise ``ValueError`` unless every entry of ``codes`` is a registered event code."""
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= len(EVENT_NAMES)):
        raise ValueError(f"event codes must be in 0..{len(EVENT_NAMES) - 1}")
