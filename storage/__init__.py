"""pocketrec.storage: the device's durable SQLite store.

One file holds the event log / upload outbox, per-user model state, the catalog cache and the
installed bundles; :class:`Store` is the entry point (``Store.open(path)``). See
``pocketrec.storage.store`` for the guarantees and ``pocketrec.storage.schema`` for the tables.
"""

from pocketrec.core.errors import SchemaTooNewError, StorageError, StorageFullError
from pocketrec.core.wire import EVENT_OVERHEAD_BYTES, MAX_EVENT_BYTES, MAX_ID_BYTES
from pocketrec.storage.bundles import BundleRecord
from pocketrec.storage.catalog import CatalogItem, CatalogUpdate
from pocketrec.storage.events import Batch, Event, NewEvent, OutboxStats
from pocketrec.storage.privacy import Erasure
from pocketrec.storage.schema import SCHEMA_VERSION
from pocketrec.storage.state import SavedUserState
from pocketrec.storage.store import Store

__all__ = [
    "EVENT_OVERHEAD_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_ID_BYTES",
    "SCHEMA_VERSION",
    "Batch",
    "BundleRecord",
    "CatalogItem",
    "CatalogUpdate",
    "Erasure",
    "Event",
    "NewEvent",
    "OutboxStats",
    "SavedUserState",
    "SchemaTooNewError",
    "StorageError",
    "StorageFullError",
    "Store",
]
