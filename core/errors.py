"""Typed errors shared by every part of pocketrec.

Bad arguments raise the built-in ``ValueError`` (as the kernels' contract says); the classes here
are for failures that are not the caller's arguments.
"""

from __future__ import annotations


class PocketrecError(Exception):
    """Base class of pocketrec's own errors."""


class KernelError(PocketrecError, RuntimeError):
    """A native kernel reported an error after its arguments had been validated."""


class BackendUnavailableError(PocketrecError, ValueError):
    """The requested top-k backend cannot be used on this machine (the message says why)."""


class DataFormatError(PocketrecError, ValueError):
    """A data file cannot be read as the expected format.

    The message names the file and, when one line is at fault, its 1-based line number
    (``"data.csv, line 7: ..."``). ``path`` and ``line`` keep them for programs.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = path if line is None else f"{path}, line {line}"
        elif line is not None:
            where = f"line {line}"
        super().__init__(f"{where}: {message}" if where else message)
        self.path = path
        self.line = line


class BundleError(PocketrecError, ValueError):
    """A bundle directory is incomplete, corrupted or of an unsupported format (names the file)."""


class ConversionError(PocketrecError, ValueError):
    """A model cannot become a bundle (a signature that breaks the step contract, a state that
    does not round-trip, an op TFLite lacks, a failed parity gate): the message says what to
    change."""


class StorageError(PocketrecError, RuntimeError):
    """The device store could not do what was asked: its file cannot be opened or read, is locked
    by another process for too long, is not a pocketrec store, or the store is closed. The message
    names the file and the cause. Bad arguments raise ``ValueError`` instead, before anything is
    written."""


class StorageFullError(StorageError):
    """The disk, or the store's own size limit, has no room left: the write was rolled back and
    nothing stored earlier was lost. Writing works again once space returns."""


class SchemaTooNewError(StorageError):
    """The store file (or the server database) was written by a newer pocketrec (a higher schema
    version than this build knows). It is refused, and left unchanged, rather than altered by
    older code."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(
            f"{path}: schema version {found} was written by a newer pocketrec; this build reads "
            f"versions up to {supported}. It was not changed; upgrade pocketrec to open it"
        )
        self.path = path
        self.found = found
        self.supported = supported


class SyncError(PocketrecError, RuntimeError):
    """Syncing with the sync server failed (the message says why). Nothing acknowledged is lost:
    events stay pending until the server's 2xx and the active bundle is left as it was."""


class SyncUnavailableError(SyncError):
    """The server could not be reached, timed out or kept answering with a retryable status
    (408, 429, 5xx) until the retry policy gave up; ``last_status`` is the last HTTP status
    (``None`` for a network error or timeout)."""

    def __init__(self, message: str, last_status: int | None = None) -> None:
        super().__init__(message)
        self.last_status = last_status


class SyncAuthError(SyncError):
    """The server refused the device's token (401 or 403): unknown or revoked device."""


class BundleRejectedError(SyncError):
    """A bundle offered by the server was refused before anything reached the interpreter: bad
    or missing signature, not newer than the installed one, or a file whose length or SHA-256
    does not match the signed manifest. The message names the check."""


class MissingDependencyError(PocketrecError, ImportError):
    """An optional package that this feature needs is not installed; the message names the
    package and the pip extra that brings it."""


class TitlesUnavailableError(PocketrecError, LookupError):
    """Titles were asked for, but the bundle has no ``item_titles.json`` (its training data had
    no titles: a RecBole ``.item`` file or a ``title`` column gives them)."""
