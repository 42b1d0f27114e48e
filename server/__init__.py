"""pocketrec.server: the reference sync server (extra ``server``: starlette, uvicorn, cryptography;
extra ``postgres`` for a PostgreSQL database).

Devices upload their feedback events (authenticated per device, size-limited, schema-checked,
idempotent on ``event_id``) and download the latest signed bundle, resumably. The operator adds
and revokes devices, publishes bundles (Ed25519-signed manifests) and exports the collected
feedback as the CSV that ``pocketrec train`` reads. See ``pocketrec.server.app`` for the protocol.

Storage goes through :class:`FeedbackStorage`; :func:`open_storage` opens a SQLite file (the
default, :class:`SqliteFeedbackStorage`) or a ``postgresql://…`` database
(``pocketrec.server.storage_postgres.PostgresFeedbackStorage``, imported only when used).
"""

from pocketrec.server.app import create_app
from pocketrec.server.bundles import BundleRepository, PublishedBundle
from pocketrec.server.faults import Fault, FaultPlan
from pocketrec.server.storage import (
    BundleRecord,
    Device,
    FeedbackStorage,
    Retention,
    StorageUnavailableError,
    StoredEvent,
    open_storage,
)
from pocketrec.server.storage_sqlite import SqliteFeedbackStorage

__all__ = [
    "BundleRecord",
    "BundleRepository",
    "Device",
    "Fault",
    "FaultPlan",
    "FeedbackStorage",
    "PublishedBundle",
    "Retention",
    "SqliteFeedbackStorage",
    "StorageUnavailableError",
    "StoredEvent",
    "create_app",
    "open_storage",
]
