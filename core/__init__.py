"""What every part of pocketrec shares: errors, ids and schemas, data, metrics, reference maths."""

from pocketrec.core.errors import BackendUnavailableError, KernelError, PocketrecError

__all__ = ["BackendUnavailableError", "KernelError", "PocketrecError"]
