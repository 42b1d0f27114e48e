"""pocketrec.server: the reference sync server (extra ``server``: starlette, uvicorn, cryptography).

Devices upload their feedback events (authenticated per device, size-limited, schema-checked,
idempotent on ``event_id``) and download the latest signed bundle, resumably. The operator adds
and revokes devices, publishes bundles (Ed25519-signed manifests) and exports the collected
feedback as the CSV that ``pocketrec train`` reads. See ``pocketrec.server.app`` for the protocol.

Storage goes through :class:`FeedbackStorage` (SQLite by default, :class:`SqliteFeedbackStorage`).
"""

from pocketrec.server.app import create_app
from pocketrec.server.bundles import BundleRepository, PublishedBundle
from pocketrec.server.faults import Fault, FaultPlan
from pocketrec.server.storage import Device, FeedbackStorage, SqliteFeedbackStorage, StoredEvent

__all__ = [
    "BundleRepository",
    "Device",
    "Fault",
    "FaultPlan",
    "FeedbackStorage",
    "PublishedBundle",
    "SqliteFeedbackStorage",
    "StoredEvent",
    "create_app",
]
