"""Keeping third-party libraries' log lines off stderr unless asked for.

- TensorFlow's C++ logging honours ``TF_CPP_MIN_LOG_LEVEL`` (the ``cpu_feature_guard`` INFO line,
  the converter's WARNING lines): :func:`quiet_tensorflow` sets it to ``2`` (errors only), unless
  the user set it. Two lines come earlier, from static initialisers while ``import tensorflow``
  loads its libraries, before absl logging is initialised, and ignore it (TensorFlow 2.21):
  absl's "WARNING: All log messages before absl::InitializeLog() is called are written to
  STDERR" and the oneDNN INFO line (``port.cc``). :func:`import_tensorflow` imports TensorFlow
  with the INFO lines and that banner filtered out of file descriptor 2.
- LiteRT (``ai_edge_litert``, ``tflite_runtime``) prints ``INFO: Created TensorFlow Lite XNNPACK
  delegate for CPU.`` from native code (TFLite's minimal logger) the first time a process applies
  the XNNPACK delegate, i.e. on the first ``allocate_tensors``. That logger honours no environment
  variable (``TF_CPP_MIN_LOG_LEVEL`` 1 to 3 tried with ai-edge-litert 2.3) and the interpreter
  has no option for it; its only other way out, an interpreter without default delegates, would
  give up XNNPACK. :func:`without_xnnpack_notice` filters that line out around the call.

Filtering points file descriptor 2 at a temporary file for the duration of the call and then
writes back everything that arrived there except the dropped lines: real errors still reach
stderr (after the call instead of during it). Setting ``POCKETREC_VERBOSE=1`` (what ``pocketrec
--verbose`` does) turns all of it off.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType

VERBOSE_ENV = "POCKETREC_VERBOSE"
"""Set to ``1`` to keep third-party log lines (``pocketrec --verbose`` sets it)."""

XNNPACK_NOTICE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
"""The line LiteRT's native code prints once per process when it applies the XNNPACK delegate."""

TENSORFLOW_IMPORT_NOISE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] .*"  # an absl INFO line (seconds: any digits)
)
"""What ``import tensorflow`` prints before its logging honours ``TF_CPP_MIN_LOG_LEVEL``: absl's
banner and INFO lines (warnings and errors are kept)."""

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


def import_tensorflow() -> ModuleType:
    """``import tensorflow`` after :func:`quiet_tensorflow`, its import-time INFO lines
    (:data:`TENSORFLOW_IMPORT_NOISE`) filtered out of stderr unless :func:`verbose`."""
    quiet_tensorflow()
    if verbose() or "tensorflow" in sys.modules:
        return importlib.import_module("tensorflow")
    with _filtered_stderr(lambda line: TENSORFLOW_IMPORT_NOISE.fullmatch(line) is not None):
        return importlib.import_module("tensorflow")


@contextmanager
def without_xnnpack_notice() -> Iterator[None]:
    """Run the body with :data:`XNNPACK_NOTICE` filtered out of stderr (module docstring).
    Does nothing when :func:`verbose` or once the notice was caught (LiteRT prints it once)."""
    global _notice_seen
    if verbose() or _notice_seen:
        yield
        return
    with _filtered_stderr(lambda line: line == XNNPACK_NOTICE) as dropped:
        yield
    _notice_seen = _notice_seen or bool(dropped)


@contextmanager
def _filtered_stderr(drop: Callable[[bytes], bool]) -> Iterator[list[bytes]]:
    """Run the body with file descriptor 2 pointed at a temporary file (a file, not a pipe:
    never blocks when full), then write back what arrived there in order, without the lines
    (end of line removed) for which ``drop`` is true; yields the list of those, filled on exit.
    Does nothing when fd 2 cannot be duplicated (no stderr). Threads take turns."""
    dropped: list[bytes] = []
    with _lock:
        _flush_python_stderr()
        try:
            saved = os.dup(2)
        except OSError:
            yield dropped
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield dropped
            finally:
                _flush_python_stderr()  # what Python wrote meanwhile goes to the sink too
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                kept: list[bytes] = []
                for line in sink.read().splitlines(keepends=True):
                    (dropped if drop(line.rstrip(b"\r\n")) else kept).append(line)
                _write_all(2, b"".join(kept))


def _flush_python_stderr() -> None:
    with contextlib.suppress(AttributeError, ValueError, OSError):  # None, closed, broken
        sys.stderr.flush()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]
