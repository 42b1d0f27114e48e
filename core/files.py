"""Durable, atomic file-system updates shared by every part that installs files: the converter's
bundle export, the server's bundle publishing and feedback export, and the device's bundle
install. Each is the same sequence: write into a staging name, fsync, rename into place, fsync
the parent directory (so the rename itself survives power loss). A crash at any point leaves the
old complete content or the new complete one, never a mix.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes a rename inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_directory(staging: Path, final: Path, *, replace: bool = False) -> None:
    """Make the complete directory ``staging`` appear as ``final``: fsync every file and folder
    in it (at any depth) and the directory, rename, fsync the parent. ``final`` must not exist
    unless ``replace``: then the old one is first renamed aside (``.<name>.old``) and deleted
    only after the new one is in place, so a reader finds the old complete directory or the new
    one (or, for the instant between the two renames, none), and a crash in between leaves the
    old one aside, never a mix. Both must be in the same file system."""
    for path in staging.rglob("*"):
        fsync_path(path)
    fsync_path(staging)
    aside = final.with_name(f".{final.name}.old")
    if replace and final.exists():
        shutil.rmtree(aside, ignore_errors=True)  # left by a crash of an earlier replace
        os.rename(final, aside)
    os.rename(staging, final)
    fsync_path(final.parent)
    if replace:
        shutil.rmtree(aside, ignore_errors=True)


def install_file(staging: Path, final: Path) -> None:
    """fsync the written file ``staging`` and rename it over ``final`` atomically, durably."""
    fsync_path(staging)
    os.replace(staging, final)
    fsync_path(final.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (via ``.<name>.tmp`` beside it)."""
    staging = path.with_name(f".{path.name}.tmp")
    with staging.open("wb") as fh:
        fh.write(data)
    install_file(staging, path)
