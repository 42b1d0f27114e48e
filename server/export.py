"""``export-feedback``: the collected events as training data, streamed in bounded memory.

Two formats (:data:`FORMATS`):

- ``"csv"`` (default): one file, ``user,item,timestamp,event``, one row per event in arrival
  order (the loader sorts each user's events by time), ``timestamp`` in seconds written exactly;
- ``"parquet"``: a folder of day-partitioned Parquet files with every stored field
  (:mod:`pocketrec.server.export_parquet` documents the layout and schema; needs pyarrow).

A user is ``<device_id>/<user_id>`` (:attr:`StoredEvent.training_user`). Both stream the events
from :meth:`FeedbackStorage.iter_events` (memory does not grow with the number of events) into a
staging name beside ``out``, fsync it and rename it into place (``pocketrec.core.files``): a reader
sees the previous complete export or the new complete one, never part of one, and a rerun
replaces the export.
"""

from __future__ import annotations

import csv
import ctypes
import glob
import os
import shutil
import sys
from pathlib import Path

from pocketrec.core.files import install_directory, install_file
from pocketrec.server.storage import FeedbackStorage

HEADER = ("user", "item", "timestamp", "event")
FORMATS: tuple[str, ...] = ("csv", "parquet")
_STAGING_PREFIX = ".{name}.staging-"  # + the pid of the exporting process
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
_MMAP_THRESHOLD_BYTES = 128 * 1024


def use_lean_allocators() -> None:
    """Process-wide allocator settings for a long export (the command line calls this first;
    it must run before pyarrow allocates anything):

    - pyarrow gets the C library's allocator (``ARROW_DEFAULT_MEMORY_POOL=system``): its default,
      mimalloc, keeps freed buffers (~20 MB more at the peak of a 1M-event Parquet export);
    - glibc serves every allocation of 128 KiB or more with its own mapping, returned to the
      system when freed (``mallopt(M_MMAP_THRESHOLD)``): otherwise the threshold grows after the
      first large frees and row groups are carved from a heap that fragments (~15 MB more).

    Elsewhere than Linux/glibc the second is skipped."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:
            return
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def export_feedback(
    storage: FeedbackStorage, out: str | os.PathLike[str], *, format: str = "csv"
) -> int:
    """Write every stored event to ``out`` (a CSV file, or a Parquet folder) in ``format``;
    returns the number of events written. ``ValueError`` for an unknown format, a CSV onto a
    folder, or a Parquet export onto a file or a folder that is not an earlier export."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    if format == "csv":
        return _export_csv(storage, target)
    return _export_parquet(storage, target)


def _export_csv(storage: FeedbackStorage, target: Path) -> int:
    if target.is_dir():
        raise ValueError(f"{target} is a folder; a CSV export writes a file")
    temp = target.with_name(f".{target.name}.tmp")
    rows = 0
    try:
        with temp.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(HEADER)
            for event in storage.iter_events():
                writer.writerow(
                    (event.training_user, event.item_id, repr(event.timestamp), event.event_type)
                )
                rows += 1
        install_file(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return rows


def _export_parquet(storage: FeedbackStorage, target: Path) -> int:
    from pocketrec.server.export_parquet import check_replaceable, write_parquet

    check_replaceable(target)
    _remove_abandoned_staging(target)
    staging = target.with_name(f"{_STAGING_PREFIX.format(name=target.name)}{os.getpid()}")
    staging.mkdir()  # the umask applies, as to any folder the operator creates
    try:
        rows = write_parquet(storage.iter_events(), staging)
        install_directory(staging, target, replace=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return rows


def _remove_abandoned_staging(target: Path) -> None:
    """Delete staging folders beside ``target`` left by an export whose process is gone (killed
    or crashed before its rename); those of running exports are left alone."""
    prefix = _STAGING_PREFIX.format(name=target.name)
    for folder in target.parent.glob(f"{glob.escape(prefix)}*"):
        pid = folder.name.removeprefix(prefix)
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
