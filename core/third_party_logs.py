"""Keeping third-party libraries' log lines off stderr unless asked for.

- TensorFlow's C++ logging (the oneDNN and ``cpu_feature_guard`` INFO lines at import, the
  converter's WARNING lines) honours ``TF_CPP_MIN_LOG_LEVEL``, read once when TensorFlow loads:
  :func:`quiet_tensorflow` sets it to ``2`` (errors only) before pocketrec imports TensorFlow,
  unless the user set it.
- LiteRT (``ai_edge_litert``, ``tflite_runtime``) prints ``INFO: Created TensorFlow Lite XNNPACK
  delegate for CPU.`` from native code (TFLite's minimal logger) the first time a process applies
  the XNNPACK delegate, i.e. on the first ``allocate_tensors``. That logger honours no environment
  variable (``TF_CPP_MIN_LOG_LEVEL`` checked with ai-edge-litert 2.3) and the interpreter has no
  option for it; its only other way out, an interpreter without default delegates, would give up
  XNNPACK. So :func:`without_xnnpack_notice` points file descriptor 2 at a temporary file around
  that call and writes back everything that arrived there except that one line: real errors
  still reach stderr (after the call instead of during it).

Setting ``POCKETREC_VERBOSE=1`` (what ``pocketrec --verbose`` does) turns both off.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

VERBOSE_ENV = "POCKETREC_VERBOSE"
"""Set to ``1`` to keep third-party log lines (``pocketrec --verbose`` sets it)."""

XNNPACK_NOTICE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
"""The line LiteRT's native code prints once per process when it applies the XNNPACK delegate."""

_lock = threading.RLock()
_notice_seen = False  # printed once per process: once caught, nothing more to filter


def verbose() -> bool:
    """Whether third-party log lines are wanted (``$POCKETREC_VERBOSE`` set, not ``0``)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ INFO and WARNING lines (``TF_CPP_MIN_LOG_LEVEL=2``) unless
    :func:`verbose` or the user set the variable. Call it before TensorFlow is imported."""
    if not verbose():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextmanager
def without_xnnpack_notice() -> Iterator[None]:
    """Run the body with file descriptor 2 captured and written back without
    :data:`XNNPACK_NOTICE` (module docstring). Does nothing when :func:`verbose`, once the notice
    was caught, or when fd 2 cannot be duplicated. Threads take turns."""
    if verbose() or _notice_seen:
        yield
        return
    with _lock:
        redirected = _redirect_stderr()
        try:
            yield
        finally:
            if redirected is not None:
                _restore_stderr(*redirected)


def _flush_python_stderr() -> None:
    with contextlib.suppress(AttributeError, ValueError, OSError):  # None, closed, broken
        sys.stderr.flush()


def _redirect_stderr() -> tuple[int, int] | None:
    """Point fd 2 at a new temporary file; returns (the saved fd 2, the file's fd)."""
    _flush_python_stderr()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a daemon): nothing to protect
        return None
    with tempfile.TemporaryFile() as sink:  # a file, not a pipe: never blocks when full
        sink_fd = os.dup(sink.fileno())  # the open file outlives its name and ``sink``
    os.dup2(sink_fd, 2)
    return saved, sink_fd


def _restore_stderr(saved: int, sink_fd: int) -> None:
    global _notice_seen
    _flush_python_stderr()  # what Python wrote meanwhile goes to the sink too
    os.dup2(saved, 2)
    os.close(saved)
    try:
        os.lseek(sink_fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(sink_fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(sink_fd)
    kept = []
    for line in b"".join(chunks).splitlines(keepends=True):
        if line.rstrip(b"\r\n") == XNNPACK_NOTICE:
            _notice_seen = True
        else:
            kept.append(line)
    rest = b"".join(kept)
    while rest:
        rest = rest[os.write(2, rest) :]
