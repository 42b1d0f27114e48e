"""pocketrec.server: the reference sync server (extra ``server``: starlette, uvicorn, cryptography;
extra ``postgres`` for a PostgreSQL database).

Devices upload their feedback events (authenticated per device, size-limited, schema-checked,
idempotent on ``event_id``) and download the latest signed bundle, resumably. The operator adds
and revokes devices, publishes bundles (Ed25519-signed manifests) and exports the collected
feedback as training data (CSV, or day-partitioned Parquet). See ``pocketrec.server.app`` for the
protocol.

Storage goes through :class:`FeedbackStorage`; :func:`open_storage` opens a SQLite file (the
default, :class:`SqliteFeedbackStorage`) or a ``postgresql://…`` database
(``pocketrec.server.storage_postgres.PostgresFeedbackStorage``, imported only when used).

The public names are imported on first use, so a command that only needs the storage (the
feedback export, device management) does not load the web stack and cryptography (~17 MB).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pocketrec.core.lazy import lazy_attributes

if TYPE_CHECKING:
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

_MODULES = {
    "BundleRecord": "storage",
    "BundleRepository": "bundles",
    "Device": "storage",
    "Fault": "faults",
    "FaultPlan": "faults",
    "FeedbackStorage": "storage",
    "PublishedBundle": "bundles",
    "Retention": "storage",
    "SqliteFeedbackStorage": "storage_sqlite",
    "StorageUnavailableError": "storage",
    "StoredEvent": "storage",
    "create_app": "app",
    "open_storage": "storage",
}

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


__getattr__ = lazy_attributes(__name__, _MODULES)
