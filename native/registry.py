"""Which top-k backends exist on this machine, and which one ``"auto"`` picks.

Backends are imported lazily: ``numba`` costs about half a second to import, so it is only loaded
when it is used. ``"auto"`` prefers ``c``, then ``numba``, then ``numpy`` (the order the benchmark
in ``bench/bench_topk.py`` measures); when the C extension is missing it says so once with a
``RuntimeWarning`` and falls back. numba is optional (the ``pocketrec[numba]`` extra): without the C
extension and without numba, ``auto`` uses the numpy reference, which gives the same results,
more slowly.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
import warnings
from functools import cache
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt

from pocketrec.core.errors import BackendUnavailableError
from pocketrec.native.result import Result
from pocketrec.native.screen import ScreenedItems

NAMES = ("c", "numba", "numpy")
_MODULES = {
    "c": "pocketrec.native.c_backend",
    "numba": "pocketrec.native.numba_backend",
    "numpy": "pocketrec.native.reference",
}
_warned = threading.Event()
NUMBA_HINT = "pip install 'pocketrec[numba]'"
"""How to get the numba backend (named in the messages that say it is missing)."""


class Backend(Protocol):
    """What a backend module provides (inputs already validated by ``arguments.prepare``)."""

    def topk_f32(
        self,
        items: npt.NDArray[np.float32],
        queries: npt.NDArray[np.float32],
        exclude: npt.NDArray[np.uint8] | None,
        k: int,
    ) -> Result: ...

    def topk_i8(
        self,
        codes: npt.NDArray[np.int8],
        scales: npt.NDArray[np.float32],
        qcodes: npt.NDArray[np.int8],
        qscales: npt.NDArray[np.float32],
        exclude: npt.NDArray[np.uint8] | None,
        k: int,
    ) -> Result: ...

    def topk_screened(
        self,
        screened: ScreenedItems,
        queries: npt.NDArray[np.float32],
        exclude: npt.NDArray[np.uint8] | None,
        k: int,
    ) -> Result: ...


@cache
def _c_import_error() -> str | None:
    """Why the C extension cannot be imported, or None when it can."""
    try:
        importlib.import_module("pocketrec.native._ctopk")
    except ImportError as exc:
        return str(exc) or type(exc).__name__
    return None


@cache
def _numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


def _why_unavailable(name: str) -> str | None:
    if name == "c":
        reason = _c_import_error()
        return None if reason is None else f"the C extension is not built ({reason})"
    if name == "numba" and not _numba_installed():
        return f"numba is not installed ({NUMBA_HINT} adds it)"
    return None


def backends() -> list[str]:
    """The backends usable here, fastest first (``"numpy"``, the reference, is always last)."""
    return [name for name in NAMES if _why_unavailable(name) is None]


def resolve(name: str) -> str:
    """Map ``"auto"`` or a backend name to an available backend name, or raise."""
    if name == "auto":
        available = backends()
        if "c" not in available and not _warned.is_set():
            _warned.set()
            warnings.warn(_fallback_message(available[0]), RuntimeWarning, stacklevel=3)
        return available[0]
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; expected 'auto' or one of {list(NAMES)}")
    reason = _why_unavailable(name)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available: {reason}")
    return name


def _fallback_message(fallback: str) -> str:
    """The one warning ``auto`` gives when it cannot use the C extension."""
    message = f"pocketrec: {_why_unavailable('c')}; using the {fallback} top-k backend"
    if fallback == "numpy":
        message += (
            " (the reference: same results, slower than C or numba; numba is not installed, "
            f"{NUMBA_HINT} adds a compiled fallback)"
        )
    return message


@cache
def load(name: str) -> Backend:
    """The module implementing backend ``name`` (``topk_f32``, ``topk_i8``, ``topk_screened``)."""
    return cast(Backend, importlib.import_module(_MODULES[name]))
