"""Which C code path (``portable``, ``avx2``, ``avx512``) the top-k kernels use when none is forced.

A wider instruction set is not always faster: a scan over a large catalog is bound by memory, and
how a kernel walks memory matters more than its vector width (see ``csrc/topk.c``). So the
choice is measured: on first use of each kernel kind (``"f32"``, ``"f32_batch"``, ``"int8"``,
``"screened"``) every
usable path runs a few interleaved top-k calls over a small scratch catalog (``CALIBRATION_ROWS`` x
``CALIBRATION_DIM``; a few milliseconds in all) and the path with the lowest minimum time wins.
The result is cached for the process.

``POCKETREC_TOPK_ISA`` (``portable``, ``avx2``, ``avx512`` or ``auto``) skips the measurement and
forces a path; a value that is unknown or not usable on this CPU raises
:class:`~pocketrec.core.errors.BackendUnavailableError` on first use.
Thread safety: the first choice is made under a lock; later calls read the cache.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from pocketrec.core.errors import BackendUnavailableError

ENV_VAR = "POCKETREC_TOPK_ISA"
KNOWN = ("portable", "avx2", "avx512")
CALIBRATION_ROWS = 8192
CALIBRATION_DIM = 64
CALIBRATION_QUERIES = 32  # the batch kind is timed with this many queries ...
BATCH_CALIBRATION_ROWS = 1024  # ... over this many rows (the screened kind: 4 times as many)
MIN_ROUNDS = 3
MAX_ROUNDS = 9
BUDGET_S = 0.01  # stop adding rounds after this much time (at least MIN_ROUNDS are run)

RunnerFactory = Callable[[], Mapping[str, Callable[[], object]]]


@dataclass(frozen=True)
class Choice:
    """The path used for one kernel kind, and why: ``source`` is ``"measured"`` (then
    ``min_us`` holds each path's fastest call, microseconds) or the environment variable."""

    kind: str
    isa: str
    source: str
    min_us: Mapping[str, float]


_lock = threading.Lock()
_choices: dict[str, Choice] = {}


def forced_isa(available: list[str]) -> str | None:
    """The path ``POCKETREC_TOPK_ISA`` forces, ``None`` when unset, empty or ``auto``.

    Raises:
        BackendUnavailableError: the value is not a known path, or this CPU cannot run it.
    """
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in KNOWN:
        raise BackendUnavailableError(
            f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not a top-k code path; "
            f"expected one of {', '.join(KNOWN)} or auto"
        )
    if value not in available:
        raise BackendUnavailableError(
            f"{ENV_VAR}={value} cannot run on this CPU; usable paths: {', '.join(available)}"
        )
    return value


@cache
def calibration_data() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Scratch catalog ``[CALIBRATION_ROWS, CALIBRATION_DIM]`` and ``CALIBRATION_QUERIES``
    queries, float32 values in [-0.5, 0.5) from a multiplicative hash (cheaper than a random
    generator's first use)."""
    rows = CALIBRATION_ROWS + CALIBRATION_QUERIES
    bits = (np.arange(rows * CALIBRATION_DIM, dtype=np.uint32) * np.uint32(2654435761)) >> 8
    values = bits.astype(np.float32) * np.float32(2.0**-24) - np.float32(0.5)
    values = values.reshape(rows, CALIBRATION_DIM)
    return values[CALIBRATION_QUERIES:], values[:CALIBRATION_QUERIES].copy()


def measure(runners: Mapping[str, Callable[[], object]]) -> dict[str, float]:
    """Fastest call of each runner in microseconds, over interleaved rounds (one warm-up call)."""
    for run in runners.values():
        run()
    best = {name: float("inf") for name in runners}
    deadline = time.perf_counter() + BUDGET_S
    for round_no in range(MAX_ROUNDS):
        if round_no >= MIN_ROUNDS and time.perf_counter() > deadline:
            break
        for name, run in runners.items():
            t0 = time.perf_counter_ns()
            run()
            best[name] = min(best[name], (time.perf_counter_ns() - t0) / 1e3)
    return best


def cached(kind: str) -> str | None:
    """The path already chosen for ``kind`` in this process, or None."""
    choice = _choices.get(kind)
    return None if choice is None else choice.isa


def choose(kind: str, available: list[str], make_runners: RunnerFactory) -> str:
    """The path for ``kind``: forced by ``POCKETREC_TOPK_ISA``, else measured once (cached)."""
    choice = _choices.get(kind)
    if choice is not None:
        return choice.isa
    with _lock:
        choice = _choices.get(kind)
        if choice is None:
            forced = forced_isa(available)
            if forced is not None:
                choice = Choice(kind, forced, ENV_VAR, {})
            elif len(available) == 1:
                choice = Choice(kind, available[0], "only path", {})
            else:
                times = measure(make_runners())
                fastest = min(times, key=times.__getitem__)
                choice = Choice(kind, fastest, "measured", times)
            _choices[kind] = choice
    return choice.isa


def choices() -> dict[str, Choice]:
    """The choices made so far in this process, by kernel kind."""
    with _lock:
        return dict(_choices)


def forget() -> None:
    """Drop the cached choices (the next call chooses again; for tests and benchmarks)."""
    with _lock:
        _choices.clear()
