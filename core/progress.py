"""A minimal progress bar for long steps (training epochs, evaluation, demo stages).

Writes to stderr: on a terminal one line redrawn in place, elsewhere (CI logs, pipes) one line per
10% so that logs stay short. No dependency beyond the standard library.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``with Progress("epoch 3", total=n) as bar: bar.update(1, loss=0.2)``."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(int(total), 1)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.fields: dict[str, float | str] = {}
        self._last_decile = -1

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1, **fields: float | str) -> None:
        """Advance by ``n`` steps and set the fields shown after the bar."""
        self.done = min(self.done + n, self.total)
        self.fields.update(fields)
        decile = self.done * 10 // self.total
        if self.tty:
            self._draw("\r")
        elif decile != self._last_decile and self.done < self.total:
            self._last_decile = decile
            self._draw("")
            self.stream.write("\n")

    def close(self, **fields: float | str) -> None:
        """Draw the final state on its own line."""
        self.fields.update(fields)
        self._draw("\r" if self.tty else "")
        self.stream.write("\n")
        self.stream.flush()

    def _draw(self, prefix: str) -> None:
        width = 24
        filled = width * self.done // self.total
        elapsed = time.perf_counter() - self.start
        extra = " ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in self.fields.items()
        )
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(
            f"{prefix}{self.label} [{bar}] {self.done}/{self.total} {elapsed:6.1f}s {extra}"
        )
        self.stream.flush()
