"""Offline-first sync with a pocketrec sync server (``pocketrec.runtime.sync``).

- :mod:`.client`: :class:`SyncClient` (one pass: upload, then bundle update) and
  :class:`BackgroundSync` (a pass every few minutes in a thread);
- :mod:`.upload`: the outbox upload (at-least-once, ordered, retried, split, quarantined);
- :mod:`.bundles`: the signed, verified, resumable bundle update;
- :mod:`.http`, :mod:`.policy`, :mod:`.signature`: the HTTP client, the retry policy and the
  Ed25519 check.

Imported only when an app syncs (``Recommender.sync``); ``import pocketrec.runtime`` does not
import it.
"""

from pocketrec.runtime.sync.client import (
    BackgroundSync,
    SyncClient,
    SyncReport,
    default_bundles_dir,
)

__all__ = ["BackgroundSync", "SyncClient", "SyncReport", "default_bundles_dir"]
