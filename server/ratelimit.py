"""Per-device rate limits: a token bucket per device id, in requests (``--rate-limit R/B``).

Every authenticated request (uploads, the latest-bundle check and bundle files alike) takes one
token from its device's bucket, which holds at most ``burst`` tokens and refills at ``rate``
tokens per second. A request that finds the bucket empty is answered 429 with ``Retry-After``
(whole seconds until a token is back, at least 1) before its body is read, and takes nothing.
The unit is requests rather than events because a request's cost on the server (authentication,
one transaction and its fsync) hardly depends on its size, which the body limit bounds anyway.

The buckets live in each worker process: with ``--workers N`` a device may get up to N times the
rate when its requests land on different workers. Idle buckets (full again) are forgotten, so
memory follows the devices active in the last ``burst / rate`` seconds.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """``rate`` requests per second per device (> 0), bursts of up to ``burst`` (>= 1)."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0) or self.burst < 1:
            raise ValueError(
                f"a rate limit needs a rate > 0 per second and a burst >= 1, got "
                f"{self.rate!r}/{self.burst!r}"
            )

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``"R/B"``: R requests per second (a number), bursts of B requests (an integer)."""
        rate, slash, burst = text.partition("/")
        try:
            if not slash:
                raise ValueError
            return cls(float(rate), int(burst))
        except ValueError:
            raise ValueError(
                f"--rate-limit must be RATE/BURST (requests per second per device / burst "
                f"size), e.g. 5/20; got {text!r}"
            ) from None

    def __str__(self) -> str:
        return f"{self.rate:g}/{self.burst}"


class TokenBuckets:
    """One token bucket per key (a device id); used from the event loop only (not thread-safe).

    ``clock``: monotonic seconds (injectable).
    """

    def __init__(self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if there was one, else the seconds until there is."""
        now = self._clock()
        tokens = self._tokens(key, now)
        self._forget_idle(now)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            self._buckets.move_to_end(key)
            return 0.0
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        return (1.0 - tokens) / self.limit.rate

    def retry_after(self, wait: float) -> str:
        """``wait`` seconds as a ``Retry-After`` value: whole seconds, at least 1."""
        return str(max(1, math.ceil(wait)))

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        state = self._buckets.get(key)
        if state is None:
            return float(self.limit.burst)
        tokens, then = state
        return min(float(self.limit.burst), tokens + (now - then) * self.limit.rate)

    def _forget_idle(self, now: float) -> None:
        """Drop the least recently used buckets that are full again (as good as new)."""
        while self._buckets:
            key = next(iter(self._buckets))
            if self._tokens(key, now) < self.limit.burst:
                break
            del self._buckets[key]
