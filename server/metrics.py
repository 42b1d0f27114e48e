"""The sync server's Prometheus metrics (prometheus-client), served at ``GET /metrics``.

One :class:`ServerMetrics` per process (:func:`server_metrics`). With several worker processes
(``pocketrec serve --workers N``) the server points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
temporary folder before the workers start; prometheus-client then keeps every value in a
per-process file there and :func:`exposition` sums the files of all workers, so any worker
answers a scrape with the whole server's figures (counters and histograms summed, the in-progress
gauge summed over live workers).

Metrics (durations in seconds, sizes in bytes):

- ``pocketrec_http_requests_total{method, route, status}``: answered requests; ``route`` is the
  route template (``/v1/bundles/{version}/files/{name}``), ``<unmatched>`` for any other path.
- ``pocketrec_http_request_duration_seconds{method, route}``: histogram, request to last byte.
- ``pocketrec_http_requests_in_progress``: requests being served now (the scrape included).
- ``pocketrec_events_received_total``, ``pocketrec_events_stored_total`` (new),
  ``pocketrec_events_duplicate_total``: events of accepted batches.
- ``pocketrec_batch_events``, ``pocketrec_batch_bytes``: histograms of accepted batches.
- ``pocketrec_commit_batches``: histogram of the batches one group commit wrote together (both
  backends; 1 on an idle server, more under load).
- ``pocketrec_bundle_downloads_total{version, file, status}``: bundle files sent (200 whole,
  206 a resumed range).
- ``pocketrec_rate_limited_total{route}``: requests answered 429.
- ``pocketrec_transport_timeouts_total{phase}``: connections cut for slow ``headers`` or ``body``.
- ``pocketrec_connections_refused_total``: connections over ``--max-connections`` (503).
"""

from __future__ import annotations

import os
import threading

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus-client keeps per-process values when several workers serve."""

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The exposition format served (Prometheus text format 0.0.4)."""

UNMATCHED_ROUTE = "<unmatched>"

BATCH_EVENT_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
BATCH_BYTE_BUCKETS = tuple(float(256 * 4**k) for k in range(7))  # 256 B .. 1 MiB
COMMIT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """The metric objects (module docstring) in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "pocketrec_http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "pocketrec_http_request_duration_seconds",
            "Seconds from the request's arrival at the application to its last response byte",
            ["method", "route"],
            registry=r,
        )
        self.in_progress = Gauge(
            "pocketrec_http_requests_in_progress",
            "Requests being served now",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.events_received = Counter(
            "pocketrec_events_received", "Events in accepted batches", registry=r
        )
        self.events_stored = Counter(
            "pocketrec_events_stored", "Events stored for the first time (new)", registry=r
        )
        self.events_duplicate = Counter(
            "pocketrec_events_duplicate", "Events resent after they were stored", registry=r
        )
        self.batch_events = Histogram(
            "pocketrec_batch_events", "Events per accepted batch", buckets=BATCH_EVENT_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.batch_bytes = Histogram(
            "pocketrec_batch_bytes", "Body bytes per accepted batch", buckets=BATCH_BYTE_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.commit_batches = Histogram(
            "pocketrec_commit_batches", "Batches written by one group commit",
            buckets=COMMIT_BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.bundle_downloads = Counter(
            "pocketrec_bundle_downloads",
            "Bundle files sent, by model version, file name and status (200 whole, 206 range)",
            ["version", "file", "status"],
            registry=r,
        )
        self.rate_limited = Counter(
            "pocketrec_rate_limited", "Requests answered 429 (rate limit)", ["route"], registry=r
        )
        self.transport_timeouts = Counter(
            "pocketrec_transport_timeouts",
            "Connections cut because the request headers or body arrived too slowly",
            ["phase"],
            registry=r,
        )
        self.connections_refused = Counter(
            "pocketrec_connections_refused",
            "Connections answered 503 because --max-connections were open",
            registry=r,
        )

    def batch(self, received: int, new: int, body_bytes: int) -> None:
        """Record an accepted batch of ``received`` events (``new`` stored) of ``body_bytes``."""
        self.events_received.inc(received)
        self.events_stored.inc(new)
        self.events_duplicate.inc(received - new)
        self.batch_events.observe(received)
        self.batch_bytes.observe(body_bytes)


_lock = threading.Lock()
_metrics: ServerMetrics | None = None


def server_metrics() -> ServerMetrics:
    """This process's metrics (created on first use)."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = ServerMetrics()
        return _metrics


def multiprocess_dir() -> str | None:
    """The folder of per-process values when several workers serve, else ``None``."""
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> bytes:
    """The scrape: this process's metrics, or every worker's summed in multi-process mode."""
    if multiprocess_dir() is None:
        return generate_latest(server_metrics().registry)
    registry = CollectorRegistry()
    # prometheus-client leaves these two unannotated
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def worker_exited() -> None:
    """Drop this process's live gauges from the multi-process folder (at a worker's shutdown)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
