"""Argument checks shared by every table of the store.

Each check returns the value in the form that is stored, or raises ``ValueError`` naming the
argument and the problem. Wrong types are ``ValueError`` too (the store's contract: bad input is a
``ValueError`` and nothing is written). All checks run before a transaction starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pocketrec.core import wire

MAX_TIMESTAMP = wire.MAX_TIMESTAMP
"""Latest accepted timestamp: 3000-01-01T00:00:00Z, in seconds since the epoch."""

MAX_JSON_DEPTH = wire.MAX_JSON_DEPTH
"""Deepest nesting of lists and objects accepted in JSON values (context, metadata)."""


def describe(value: object) -> str:
    """Short ``type value`` description for error messages (long values are cut)."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def utf8_size(name: str, value: str) -> int:
    """Bytes of ``value`` encoded as UTF-8; ``ValueError`` if it cannot be (lone surrogates)."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} is not valid UTF-8 text ({exc.reason})") from None


def text(name: str, value: object, *, max_bytes: int) -> str:
    """A non-empty ``str`` of at most ``max_bytes`` UTF-8 bytes without NUL characters."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a str, got {describe(value)}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL characters")
    size = utf8_size(name, value)
    if size > max_bytes:
        raise ValueError(f"{name} is {size} bytes of UTF-8; the limit is {max_bytes}")
    return value


def identifier(name: str, value: object) -> str:
    """A user or item id as the sync wire accepts it (``pocketrec.core.wire.id_problem``: at
    most :data:`MAX_ID_BYTES` bytes, no control characters)."""
    problem = wire.id_problem(value)
    if problem is not None:
        got = f", got {describe(value)}" if not isinstance(value, str) else ""
        raise ValueError(f"{name} {problem}{got}")
    assert isinstance(value, str)
    return value


def optional_text(name: str, value: object, *, max_bytes: int) -> str | None:
    """``None`` or a :func:`text`."""
    return None if value is None else text(name, value, max_bytes=max_bytes)


def integer(name: str, value: object, *, minimum: int = 0, maximum: int = 2**63 - 1) -> int:
    """An ``int`` (not ``bool``) in ``[minimum, maximum]``; numpy integers are accepted."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{name} must be an int, got {describe(value)}")
    number = int(value.__index__())
    if not minimum <= number <= maximum:
        raise ValueError(f"{name} must be in {minimum}..{maximum}, got {number}")
    return number


def positive(name: str, value: object) -> float:
    """A finite real number > 0 (``int`` or ``float``, not ``bool``)."""
    number = real(name, value)
    if not number > 0:
        raise ValueError(f"{name} must be > 0, got {number!r}")
    return number


def real(name: str, value: object) -> float:
    """A finite ``int`` or ``float`` (not ``bool``) as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {describe(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{name} is too large: {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number!r}")
    return number


def timestamp(name: str, value: object) -> float:
    """Seconds since the epoch (UTC) as a float in ``[0, MAX_TIMESTAMP]``."""
    seconds = real(name, value)
    if not 0.0 <= seconds <= MAX_TIMESTAMP:
        raise ValueError(
            f"{name} must be seconds since the epoch in 0..{MAX_TIMESTAMP:.0f} "
            f"(year 3000), got {seconds!r}"
        )
    return seconds


def json_object(name: str, value: object, *, max_bytes: int) -> str | None:
    """``None``, or a JSON object (a ``Mapping`` with ``str`` keys) as compact UTF-8 JSON text.

    Values may be ``dict``, ``list``, ``str``, ``int``, finite ``float``, ``bool`` or ``None``,
    nested at most :data:`MAX_JSON_DEPTH` deep, so that reading it back gives an equal value.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a JSON object (a dict) or None, got {describe(value)}")
    _check_json(name, value, 0)
    encoded = wire.json_text(value)
    size = utf8_size(name, encoded)
    if size > max_bytes:
        raise ValueError(f"{name} is {size} bytes as JSON; the limit is {max_bytes}")
    return encoded


def _check_json(name: str, value: object, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{name} is nested deeper than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name} holds a non-finite number {value!r}; JSON cannot store it")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{name} has a non-str key {describe(key)}; JSON keys are str")
            _check_json(name, item, depth + 1)
        return
    if isinstance(value, list):
        for item in value:
            _check_json(name, item, depth + 1)
        return
    raise ValueError(f"{name} holds {describe(value)}, which is not a JSON value")
