"""When the sync client retries, and how long it waits (all times in seconds).

Retryable: network errors and timeouts, HTTP 408, 429 and every 5xx except 501 and 505. The
``n``-th retry (``n`` = 0, 1, ...) waits ``min(max_delay, base_delay * 2**n)`` times a uniform
jitter factor in ``[1 - jitter, 1 + jitter]`` (0.5 s, 1 s, 2 s, ... capped at 300 s, ±10%); a
``Retry-After`` header (seconds or an HTTP date) replaces that wait (capped at ``max_delay``,
never below 0). After ``max_attempts`` attempts the call gives up with
:class:`SyncUnavailableError`; ``sleep`` and ``clock`` are injectable so tests check the schedule
without waiting.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pocketrec.core.errors import SyncUnavailableError
from pocketrec.runtime.sync.http import NetworkError, Response

NOT_RETRIED_5XX = (501, 505)


def retryable_status(status: int) -> bool:
    """True for 408, 429 and 5xx other than 501 and 505."""
    return status in (408, 429) or (500 <= status <= 599 and status not in NOT_RETRIED_5XX)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or an HTTP date; ``now`` is
    the wall clock in seconds since the epoch), or ``None`` when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter (see the module docstring)."""

    base_delay: float = 0.5
    max_delay: float = 300.0
    jitter: float = 0.1
    max_attempts: int = 8

    def __post_init__(self) -> None:
        if not (self.base_delay > 0 and self.max_delay >= self.base_delay):
            raise ValueError("need base_delay > 0 and max_delay >= base_delay (seconds)")
        if not 0 <= self.jitter < 1 or self.max_attempts < 1:
            raise ValueError("need 0 <= jitter < 1 and max_attempts >= 1")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Seconds before retry number ``retry`` (0-based), jitter applied."""
        raw = min(self.max_delay, self.base_delay * 2.0 ** min(retry, 64))
        return raw * rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)

    def wait(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """The wait before retry ``retry``: ``Retry-After`` when given (capped), else backoff."""
        if retry_after is not None:
            return min(self.max_delay, max(0.0, retry_after))
        return self.backoff(retry, rng)


@dataclass
class Retrier:
    """Runs one request under a :class:`RetryPolicy`; records every wait in ``waits``."""

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    waits: list[float] = field(default_factory=list)
    """Every wait so far, in seconds, in order (for reports and tests)."""

    def call(self, request: Callable[[], Response], *, what: str) -> Response:
        """The first response that is not retryable (2xx, or a 4xx other than 408/429, or
        501/505); raises :class:`SyncUnavailableError` after ``max_attempts`` attempts."""
        last_status: int | None = None
        last_problem = ""
        retry_after: float | None = None
        for attempt in range(self.policy.max_attempts):
            if attempt:
                self._pause(attempt - 1, retry_after)
            retry_after = None
            try:
                response = request()
            except NetworkError as exc:
                last_status, last_problem = None, str(exc)
                continue
            if not retryable_status(response.status):
                return response
            last_status, last_problem = response.status, f"HTTP {response.status}"
            retry_after = parse_retry_after(response.header("retry-after"), now=self.clock())
        raise SyncUnavailableError(
            f"{what}: gave up after {self.policy.max_attempts} attempts ({last_problem})",
            last_status,
        )

    def _pause(self, retry: int, retry_after: float | None) -> None:
        delay = self.policy.wait(retry, retry_after, self.rng)
        self.waits.append(delay)
        self.sleep(delay)
