"""Offline-first sync with a pocketrec sync server: upload feedback, pull verified bundles.

``SyncClient(store, url, token, public_key=...).run()`` runs one pass on a device store (what
``Recommender.sync`` does, with ``replace_bundle`` as ``on_bundle``):

1. upload every pending event, oldest first (``pocketrec.runtime.sync.upload``: marked uploaded
   only after a 2xx; retries with backoff; 413 splits; other 4xx quarantine);
2. if a public key is configured, install a newer signed bundle once it is proven
   (``pocketrec.runtime.sync.bundles``: staged, verified, opened and exercised, then switched)
   and hand it to ``on_bundle`` (the Recommender's ``replace_bundle``); if that still fails the
   version is recorded as failed and the previous bundle is active again.

It never raises for the network or the server: an unreachable server, a refused token or a
rejected bundle end the pass and are reported in the :class:`SyncReport`; whatever was not
acknowledged stays pending for the next pass. Nothing here runs on the ``observe`` path:
``Recommender.sync`` (one pass) or :class:`BackgroundSync` (a thread, every ``interval`` seconds
± jitter) call it. Bad arguments raise ``ValueError``.
"""

from __future__ import annotations

import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pocketrec.core.bundle import manifest_sha256
from pocketrec.core.errors import BundleError, SyncAuthError, SyncError, SyncUnavailableError
from pocketrec.core.wire import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_EVENTS, DOWNLOAD_CHUNK_BYTES
from pocketrec.runtime.sync.bundles import BundleUpdate, Progress, update_bundle
from pocketrec.runtime.sync.http import HttpClient
from pocketrec.runtime.sync.policy import Retrier, RetryPolicy
from pocketrec.runtime.sync.signature import PublicKey, public_key_bytes
from pocketrec.runtime.sync.upload import UploadReport, upload_pending
from pocketrec.storage import Store

logger = logging.getLogger("pocketrec.sync")

BUNDLES_FOLDER = "bundles"


@dataclass
class SyncReport:
    """What one sync pass did.

    ``upload``: the upload counts; ``bundle``: the bundle check (``None`` when no public key is
    configured or the pass stopped before it); ``error``: why the pass stopped early (``None``
    when it ran to the end); ``offline``: the server could not be reached (or kept failing);
    ``waits``: every retry wait in seconds.
    """

    upload: UploadReport = field(default_factory=UploadReport)
    bundle: BundleUpdate | None = None
    error: str | None = None
    offline: bool = False
    unauthorized: bool = False
    waits: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The pass ran to the end and no bundle was rejected in it (a version that failed
        before is reported as ``"failed_before"`` and does not fail the pass again)."""
        rejected = self.bundle is not None and self.bundle.status == "rejected"
        return self.error is None and not rejected


def default_bundles_dir(store: Store) -> Path:
    """Where synced bundles are installed by default: ``bundles/`` next to the store file."""
    return store.path.parent / BUNDLES_FOLDER


class SyncClient:
    """The sync configuration of one device store; :meth:`run` does one pass.

    Args:
        store: the device store (its outbox and installed bundles).
        url: the server, e.g. ``"https://sync.example.com"``.
        token: the device token (``pocketrec device add`` printed it).
        public_key: the Ed25519 public key bundles must be signed with (32 bytes, 64 hex digits
            or a ``KEY.pub`` path); ``None``: bundles are not pulled.
        bundles_dir: where bundles are installed (default ``bundles/`` next to the store).
        timeout: seconds per socket operation.
        policy: the retry policy (backoff 0.5 s doubling, ±10%, capped at 300 s).
        sleep, clock, rng: injectable waiting, wall clock and jitter source (for tests).
        batch_events, batch_bytes: upload batch limits (store-counted bytes).
        chunk_bytes: download chunk size in bytes.
        progress: bundle-install progress callback (``pocketrec.runtime.sync.bundles``).
        allow_http: accept a plain ``http://`` url to a host that is not loopback (the token
            and events then travel unencrypted); without it such a url raises ``ValueError``.
        ssl_context: verify the server's certificate with this context instead of the system's
            trust store (e.g. a private CA); it must still verify (``ValueError`` otherwise).
    """

    def __init__(
        self,
        store: Store,
        url: str,
        token: str,
        *,
        public_key: PublicKey | None = None,
        bundles_dir: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        batch_events: int = DEFAULT_BATCH_EVENTS,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        chunk_bytes: int = DOWNLOAD_CHUNK_BYTES,
        progress: Progress | None = None,
        allow_http: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not isinstance(token, str) or not token:
            raise ValueError("token must be a non-empty str")
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
        self.store = store
        self.client = HttpClient(
            url, token, timeout=timeout, allow_http=allow_http, ssl_context=ssl_context
        )
        self.public_key = None if public_key is None else public_key_bytes(public_key)
        self.bundles_dir = Path(bundles_dir) if bundles_dir else default_bundles_dir(store)
        self.policy = policy or RetryPolicy()
        self._sleep, self._clock = sleep, clock
        self._rng = rng or random.Random()
        self.batch_events, self.batch_bytes = batch_events, batch_bytes
        self.chunk_bytes = chunk_bytes
        self.progress = progress
        self._lock = threading.Lock()

    def run(
        self,
        *,
        current_version: int | None = None,
        on_bundle: Callable[[Path], None] | None = None,
    ) -> SyncReport:
        """One pass (module docstring); one pass at a time per client (others wait). The
        pass's requests (upload batches, the bundle check, downloads) share one HTTP
        connection, closed when the pass ends (``HttpClient``).

        ``current_version``: the model version being served (no bundle at or below it, nor
        below any installed one, is accepted); ``on_bundle(path)``: called with a newly
        installed and activated bundle directory.
        """
        with self._lock:
            report = SyncReport()
            retrier = Retrier(self.policy, self._sleep, self._clock, self._rng, report.waits)
            try:
                report.upload = upload_pending(
                    self.store,
                    self.client,
                    retrier,
                    batch_events=self.batch_events,
                    batch_bytes=self.batch_bytes,
                )
                if self.public_key is not None:
                    report.bundle = self._update(retrier, current_version, on_bundle)
            except SyncError as exc:
                report.error = str(exc)
                report.offline = isinstance(exc, SyncUnavailableError)
                report.unauthorized = isinstance(exc, SyncAuthError)
                report.upload.pending = self.store.stats().pending_events
                logger.info("sync stopped: %s", exc)
            finally:
                self.client.close()  # the pass's connection: no idle socket until the next one
            return report

    def _update(
        self,
        retrier: Retrier,
        current_version: int | None,
        on_bundle: Callable[[Path], None] | None,
    ) -> BundleUpdate:
        assert self.public_key is not None
        previous = self.store.active_bundle()
        update = update_bundle(
            self.store,
            self.client,
            retrier,
            public_key=self.public_key,
            bundles_dir=self.bundles_dir,
            current_version=current_version,
            chunk_bytes=self.chunk_bytes,
            progress=self.progress,
        )
        if update.status == "rejected":
            logger.warning("bundle rejected: %s", update.reason)
        if update.status != "installed" or on_bundle is None or update.path is None:
            return update
        try:
            on_bundle(update.path)
        except BundleError as exc:  # proven in staging, yet it did not load: never again
            assert update.model_version is not None
            self.store.mark_bundle_failed(
                update.model_version, update.path, manifest_sha256(update.path), reason=str(exc)
            )
            self.store.activate_bundle(None if previous is None else previous.model_version)
            logger.warning("bundle %s could not be loaded: %s", update.path, exc)
            return BundleUpdate("rejected", update.model_version, update.path, f"load: {exc}")
        return update


class BackgroundSync:
    """Runs ``run()`` in a daemon thread every ``interval`` seconds ± ``jitter`` (a fraction),
    first after one interval (or at once with ``run_first``). :meth:`trigger` runs a pass now,
    :meth:`stop` ends the thread. ``last_report`` holds the latest report."""

    def __init__(
        self,
        run: Callable[[], SyncReport],
        *,
        interval: float = 300.0,
        jitter: float = 0.1,
        run_first: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        if not interval > 0 or not 0 <= jitter < 1:
            raise ValueError("need interval > 0 seconds and 0 <= jitter < 1")
        self._run = run
        self.interval, self.jitter = float(interval), float(jitter)
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._run_first = run_first
        self.last_report: SyncReport | None = None
        self.passes = 0
        self._thread = threading.Thread(target=self._loop, name="pocketrec-sync", daemon=True)

    def start(self) -> BackgroundSync:
        self._thread.start()
        return self

    def trigger(self) -> None:
        """Run a pass as soon as the current one (if any) ends."""
        self._wake.set()

    def stop(self, *, timeout: float | None = None) -> None:
        """Stop after the pass in progress (waits up to ``timeout`` seconds for it)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        first = self._run_first
        while not self._stop.is_set():
            if not first:
                pause = self.interval * self._rng.uniform(1 - self.jitter, 1 + self.jitter)
                self._wake.wait(pause)
                self._wake.clear()
                if self._stop.is_set():
                    break
            first = False
            try:
                self.last_report = self._run()
            except Exception:  # a bug must not kill the thread silently
                logger.exception("background sync pass failed")
            self.passes += 1
