"""Fault injection for tests of the sync protocol (off unless a :class:`FaultPlan` is passed).

Each ``POST /v1/events`` request takes the next planned :class:`Fault`, if any: answer with an
error status (nothing stored), hang before processing, or store the batch and then hang so the
reply never reaches a client with a shorter timeout (the "lost reply").
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    """One planned misbehaviour.

    - ``status``: answer with this HTTP status instead of processing (nothing stored), with a
      ``Retry-After`` header when ``retry_after`` is set (seconds or an HTTP date, verbatim).
    - ``delay``: seconds to hang first (before processing, or after the commit with
      ``after_commit``).
    - ``after_commit``: store the batch, then hang ``delay`` seconds before replying.
    """

    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    after_commit: bool = False


class FaultPlan:
    """A thread-safe queue of faults for upcoming event uploads, and a count of the uploads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self.requests = 0
        """How many ``POST /v1/events`` requests arrived (faulted ones included)."""

    def add(self, *faults: Fault) -> None:
        """Plan ``faults`` for the next requests, in order."""
        with self._lock:
            self._faults.extend(faults)

    def next(self) -> Fault | None:
        """The fault for the request that just arrived (counted), or ``None``."""
        with self._lock:
            self.requests += 1
            return self._faults.popleft() if self._faults else None

    def pending(self) -> int:
        """Faults not used yet."""
        with self._lock:
            return len(self._faults)
