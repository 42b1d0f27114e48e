"""The demo's sync server and simulated devices.

:class:`DemoServer` is the reference server (``pocketrec serve``) in a thread on 127.0.0.1 with a
free port, its signing key (``pocketrec keygen``), device registration (``pocketrec device add``)
and publishing (``pocketrec publish``). :class:`Device` is one phone: its own SQLite store, a
:class:`~pocketrec.runtime.Recommender` on the bundle it pulled through sync, and timings of every
``observe``, ``recommend`` and ``sync`` call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocketrec.core.events import EventType
from pocketrec.core.progress import Progress
from pocketrec.demo_data import DeviceEvent
from pocketrec.runtime import Recommender
from pocketrec.runtime.sync import SyncClient, SyncReport
from pocketrec.runtime.sync.policy import RetryPolicy
from pocketrec.storage import Store

RECOMMEND_K = 10
KINDS = ("observe", "recommend", "sync")


@dataclass
class Latencies:
    """Seconds per call, by kind (``observe``, ``recommend``, ``sync``)."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    @contextmanager
    def timed(self, kind: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.samples.setdefault(kind, []).append(time.perf_counter() - start)

    def merge(self, other: Latencies) -> None:
        for kind, values in other.samples.items():
            self.samples.setdefault(kind, []).extend(values)

    def ordered(self) -> dict[str, list[float]]:
        """The samples in the order of :data:`KINDS` (kinds never timed left out)."""
        return {kind: self.samples[kind] for kind in KINDS if kind in self.samples}


class DemoServer:
    """The sync server under ``root`` (``server.sqlite``, ``published/``, ``signing.key``)."""

    def __init__(self, root: Path) -> None:
        from pocketrec.server import FaultPlan
        from pocketrec.server.running import ServerThread
        from pocketrec.server.signing import generate_key, load_private_key

        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.key_path = root / "signing.key"
        self.public_key = generate_key(self.key_path)
        self._private_key = load_private_key(self.key_path)
        self.db = root / "server.sqlite"
        self.faults = FaultPlan()
        self.thread = ServerThread(self.db, root / "published", faults=self.faults)

    @property
    def url(self) -> str:
        return self.thread.url

    def _with_storage(self, use: Callable[[Any], Any]) -> Any:
        from pocketrec.server.storage import open_storage

        storage = open_storage(self.db)
        try:
            return use(storage)
        finally:
            storage.close()

    def add_device(self, device_id: str) -> str:
        """Register ``device_id``; returns its token."""
        return str(self._with_storage(lambda s: s.add_device(device_id)))

    def publish(self, bundle_dir: Path) -> int:
        """Sign ``bundle_dir`` and make it the latest version; returns its model version."""
        return int(self.thread.bundles.publish(bundle_dir, self._private_key).model_version)

    def stored_events(self) -> int:
        """Events stored on the server (each ``event_id`` once)."""
        return int(self._with_storage(lambda s: s.count_events()))

    def export_feedback(self, out: Path) -> int:
        """``pocketrec export-feedback``: the stored events as a training CSV; returns rows."""
        from pocketrec.server.export import export_feedback

        return int(self._with_storage(lambda s: export_feedback(s, out)))


@dataclass
class SyncCounts:
    """Totals over a device's sync passes."""

    passes: int = 0
    uploaded: int = 0
    new_on_server: int = 0
    offline_passes: int = 0
    bundles_installed: list[int] = field(default_factory=list)

    def add(self, report: SyncReport) -> None:
        self.passes += 1
        self.uploaded += report.upload.uploaded
        self.new_on_server += report.upload.new_on_server
        self.offline_passes += report.offline
        if report.bundle is not None and report.bundle.status == "installed":
            self.bundles_installed.append(report.bundle.model_version or 0)


class Device:
    """One simulated phone under ``root`` with its own store (``device.sqlite``)."""

    def __init__(
        self,
        name: str,
        root: Path,
        server: DemoServer,
        *,
        max_pending_events: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.token = server.add_device(name)
        self.server = server
        path = root / "device.sqlite"
        self.store = (
            Store.open(path)
            if max_pending_events is None
            else Store.open(path, max_pending_events=max_pending_events)
        )
        self.timeout = timeout
        self.latency = Latencies()
        self.counts = SyncCounts()
        self.logged = 0
        self.rec: Recommender | None = None

    def pull_first_bundle(self) -> Path:
        """Install the server's latest bundle through sync and open the recommender on it."""
        client = SyncClient(
            self.store, self.server.url, self.token, public_key=self.server.public_key
        )
        with self.latency.timed("sync"):
            report = client.run()
        self._check(report, "first sync")
        self.counts.add(report)
        self.rec = Recommender.open(None, db=self.store)  # no shipped bundle: the installed one
        return Path(self.rec.info()["bundle"])

    @property
    def recommender(self) -> Recommender:
        if self.rec is None:
            raise RuntimeError(f"{self.name}: no bundle pulled yet")
        return self.rec

    def replay(self, events: list[DeviceEvent]) -> None:
        """Observe every event (offline: no network involved), showing a list after each."""
        rec = self.recommender
        with Progress(f"{self.name}: replaying", total=len(events)) as bar:
            for e in events:
                with self.latency.timed("observe"):
                    rec.observe(e.item, EventType(e.event), user=e.user, ts=e.ts)
                self.logged += 1
                with self.latency.timed("recommend"):
                    rec.recommend(RECOMMEND_K, user=e.user)
                bar.update(1)

    def observe(self, item: str, event: str, user: str) -> None:
        """One more logged event (timed)."""
        with self.latency.timed("observe"):
            self.recommender.observe(item, event, user=user)
        self.logged += 1

    def sync(self, *, expect_offline: bool = False) -> SyncReport:
        """One sync pass (upload, then a newer signed bundle installed in place)."""
        options: dict[str, Any] = {"timeout": self.timeout}
        if expect_offline:  # give up at once instead of backing off for minutes
            options.update(policy=RetryPolicy(max_attempts=2), sleep=lambda _s: None)
        with self.latency.timed("sync"):
            report = self.recommender.sync(
                self.server.url, self.token, public_key=self.server.public_key, **options
            )
        self.counts.add(report)
        if expect_offline:
            if not report.offline:
                raise RuntimeError(f"{self.name}: sync should have found the server unreachable")
        else:
            self._check(report, "sync")
        return report

    def _check(self, report: SyncReport, what: str) -> None:
        if not report.ok:
            raise RuntimeError(f"{self.name}: {what} failed: {report.error or report.bundle}")

    @property
    def dropped(self) -> int:
        """Events the outbox cap dropped before they could be uploaded."""
        return int(self.store.stats().dropped_events)

    @property
    def pending(self) -> int:
        return int(self.store.stats().pending_events)

    def close(self) -> None:
        if self.rec is not None:
            self.rec.close()
        self.store.close()
