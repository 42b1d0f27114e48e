"""Uploading the store's pending events (``POST /v1/events``), oldest first.

Each batch comes from ``Store.pending`` and is marked uploaded only after the server's 2xx
(at-least-once; the server deduplicates on ``event_id``, so a lost reply only means a resend).
Retryable failures follow the :class:`Retrier`'s policy; when it gives up the upload stops and
everything not acknowledged stays pending. 413 splits the batch in halves (an event refused alone
is quarantined); another non-retryable 4xx quarantines the batch (``Store.quarantine``) and the
rest proceeds; 401/403 stop the upload with :class:`SyncAuthError` (a token problem, not the
batch's); 404/405 (wrong URL) stop it with :class:`SyncError`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from pocketrec.core import wire
from pocketrec.core.errors import SyncAuthError, SyncError
from pocketrec.core.wire import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_EVENTS
from pocketrec.runtime.sync.http import HttpClient, Response
from pocketrec.runtime.sync.policy import Retrier
from pocketrec.storage import Batch, Event, Store

EVENTS_PATH = "/v1/events"

_STOP_STATUSES = (404, 405)


@dataclass
class UploadReport:
    """What one upload pass did (counts of events)."""

    uploaded: int = 0
    """Acknowledged by the server and marked uploaded."""
    new_on_server: int = 0
    """Of those, how many the server had not stored before (the rest were resends)."""
    batches: int = 0
    """Acknowledged requests."""
    quarantined: int = 0
    """Newly quarantined in this pass."""
    splits: int = 0
    """Batches split after a 413."""
    pending: int = 0
    """Still pending afterwards (quarantined ones included)."""
    errors: list[str] = field(default_factory=list)
    """Why batches were quarantined, and why the pass stopped early (if it did)."""


def upload_pending(
    store: Store,
    client: HttpClient,
    retrier: Retrier,
    *,
    batch_events: int = DEFAULT_BATCH_EVENTS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> UploadReport:
    """Upload every pending, unquarantined event in ``seq`` order; returns the report.

    Before every request, first send and retries alike, the batch is read again from the store
    (:meth:`Store.still_pending`): events purged meanwhile (``opt_out``, ``erase_user``, the
    outbox caps) are never sent, and after an opt-out nothing is.

    Raises :class:`SyncUnavailableError` when the retry policy gives up,
    :class:`SyncAuthError` for 401/403 and :class:`SyncError` for 404/405; events acknowledged
    before that are marked uploaded, nothing else changes.
    """
    report = UploadReport()
    try:
        while True:
            batch = store.pending(max_events=batch_events, max_bytes=batch_bytes)
            if not batch.events:
                break
            _send(store, client, retrier, batch, report)
    finally:
        report.pending = store.stats().pending_events
    return report


class _Withdrawn(Exception):
    """Every event of the batch was purged before the request could be sent."""


def _send(
    store: Store, client: HttpClient, retrier: Retrier, batch: Batch, report: UploadReport
) -> None:
    sent = [batch]

    def attempt() -> Response:
        current = store.still_pending(batch)  # read again before every send and every retry
        if not current.events:
            raise _Withdrawn
        sent[0] = current
        # idempotent: the server stores each event_id once, so a batch sent twice (a reply
        # lost, a kept connection closed under the request) is stored once
        return client.post_json(EVENTS_PATH, request_body(current.events), idempotent=True)

    try:
        response = retrier.call(attempt, what="upload")
    except _Withdrawn:
        return
    batch = sent[0]
    if 200 <= response.status < 300:
        report.uploaded += store.mark_uploaded(batch)
        report.new_on_server += _new_count(response, len(batch))
        report.batches += 1
        return
    if response.status in (401, 403):
        raise SyncAuthError(f"upload refused: {response.error_text()}")
    if response.status in _STOP_STATUSES:
        raise SyncError(f"upload: {response.error_text()} (is the server URL right?)")
    if response.status == 413 and len(batch) > 1:
        report.splits += 1
        half = len(batch) // 2
        _send(store, client, retrier, Batch(batch.events[:half]), report)
        _send(store, client, retrier, Batch(batch.events[half:]), report)
        return
    reason = response.error_text()
    report.quarantined += store.quarantine(batch, status=response.status, reason=reason)
    report.errors.append(f"seq {batch.first_seq}..{batch.last_seq} quarantined: {reason}")


def request_body(events: Sequence[Event]) -> bytes:
    """The ``POST /v1/events`` body for ``events``: compact UTF-8 JSON, at most their summed
    ``size`` plus ``pocketrec.core.wire.BATCH_ENVELOPE_BYTES``."""
    return wire.json_text({"events": [event.to_upload() for event in events]}).encode("utf-8")


def _new_count(response: Response, sent: int) -> int:
    try:
        value = json.loads(response.body).get("new", sent)
    except (ValueError, AttributeError):
        return sent
    return int(value) if isinstance(value, int) else sent
