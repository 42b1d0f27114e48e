"""``pocketrec demo``: the whole product loop, offline, in one command.

1. Train the interest model on the training users and convert it to version 1 (float32 and int8
   catalogs; the converter's parity gate must pass).
2. Start the sync server on 127.0.0.1 (a free port), make a signing key, register the devices and
   publish version 1 (int8 catalog), signed.
3. Each simulated device pulls version 1 through sync, then the network goes down: it replays its
   held-out users' events (dislikes and dismissals included) through ``Recommender`` with its own
   SQLite store, asking for a list after every event; one device tries to sync while offline.
   The network comes back and every device uploads. On purpose, one device has a small outbox cap
   (its oldest events are dropped and counted) and one reply is lost (the batch is resent and the
   server stores it once).
4. The server's feedback is exported and version 2 is trained on version 1's training data plus
   that feedback (the held-out test targets were never uploaded), published, and every device
   installs it in place (``replace_bundle``) on its next sync.
5. One user dismisses the top item of their list (before/after shown with titles); everything is
   measured and written to ``report.md``, ``report.json`` and PNG plots in the output folder.

Every file (models, bundles, server database, device stores) lives under ``--out``. Any failed
step raises :class:`DemoError`.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pocketrec.core.errors import PocketrecError
from pocketrec.demo_data import DemoData, device_events, make_demo_data, merge
from pocketrec.demo_fleet import RECOMMEND_K, DemoServer, Device, Latencies
from pocketrec.demo_models import TINY_MODEL, TrainedVersion, train_version
from pocketrec.demo_plots import dismissal_lists, latency_histogram, metrics_bars
from pocketrec.demo_report import (
    REPORTED,
    all_finite,
    bundle_accuracy,
    percentiles_ms,
    popularity_accuracy,
    write_report,
)

DEFAULT_OUT = Path("pocketrec-demo")
LOST_REPLY_TIMEOUT = 1.0
"""Seconds the device whose reply is lost waits for an answer (the server answers later)."""
OUTBOX_CAP_FRACTION = 0.8
"""The capped device's outbox holds this fraction of its events: the oldest others are dropped."""


class DemoError(PocketrecError, RuntimeError):
    """A demo step failed or a check on its results did not hold."""


@dataclass(frozen=True)
class DemoOptions:
    """What ``pocketrec demo`` was asked for (see ``pocketrec demo --help``)."""

    out: Path = DEFAULT_OUT
    data: Path | None = None
    users: int | None = None
    devices: int = 4
    fast: bool = False
    force: bool = False
    seed: int = 0

    @property
    def num_users(self) -> int:
        return self.users if self.users is not None else (1000 if self.fast else 3000)

    @property
    def num_items(self) -> int:
        return 150 if self.fast else 400

    @property
    def max_epochs(self) -> int:
        return 15 if self.fast else 60

    @property
    def model(self) -> dict[str, Any]:
        return dict(TINY_MODEL) if self.fast else {}

    def describe(self) -> str:
        if self.data is not None:
            return f"`{self.data}`"
        return f"synthetic generator, {self.num_users:,} users over {self.num_items} items"


def prepare_out(out: Path, force: bool) -> None:
    """Create ``out``; a non-empty one is refused unless ``force`` (then emptied)."""
    if out.exists() and not out.is_dir():
        raise DemoError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise DemoError(f"{out} is not empty: pass --force to replace it, or another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


@dataclass
class DemoRun:
    """The state of one run, step by step."""

    options: DemoOptions
    stream: TextIO
    data: DemoData | None = None
    server: DemoServer | None = None
    devices: list[Device] = field(default_factory=list)
    versions: dict[int, TrainedVersion] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return self.options.out

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    @contextmanager
    def step(self, number: int, title: str) -> Iterator[None]:
        """Announce a step, time it, and turn any failure into a :class:`DemoError`."""
        self.say(f"[{number}/5] {title}")
        start = time.perf_counter()
        try:
            yield
        except DemoError:
            raise
        except Exception as exc:
            raise DemoError(f"step {number} ({title}) failed: {exc}") from exc
        seconds = time.perf_counter() - start
        self.steps.append(f"{number}. {title} ({seconds:.1f} s)")
        self.say(f"      done in {seconds:.1f} s")

    # ------------------------------------------------------------------ accessors

    def need_data(self) -> DemoData:
        if self.data is None:
            raise DemoError("no data loaded")
        return self.data

    def need_server(self) -> DemoServer:
        if self.server is None:
            raise DemoError("the server is not set up")
        return self.server

    # ------------------------------------------------------------------ steps

    def train_v1(self) -> None:
        o = self.options
        self.data = make_demo_data(
            o.data, users=o.num_users, items=o.num_items, devices=o.devices,
            heldout_fraction=0.2, seed=o.seed,
        )  # fmt: skip
        self.say(f"      {self.data.train.summary().splitlines()[0]}")
        self.say(f"      held out: {self.data.heldout.num_users:,} users on {o.devices} devices")
        self._train(1, self.data.train, ("float32", "int8"))

    def _train(self, version: int, data: Any, dtypes: tuple[str, ...]) -> None:
        o = self.options
        trained = train_version(
            data, self.out / f"v{version}", model_version=version, catalog_dtypes=dtypes,
            max_epochs=o.max_epochs, overrides=o.model, seed=o.seed,
        )  # fmt: skip
        self.versions[version] = trained
        self.say(
            f"      version {version}: best epoch {trained.best_epoch}, "
            f"{trained.train_seconds:.1f} s; parity max |diff| "
            f"{trained.parity['max_abs_diff']:.2g}; bundles "
            + ", ".join(f"{k} {sum(v.values()):,} B" for k, v in trained.sizes.items())
        )

    def start_server(self) -> None:
        server = DemoServer(self.out / "server")
        server.thread.start()
        self.server = server
        version = server.publish(self.versions[1].bundles["int8"])
        self.say(f"      {server.url}: version {version} (int8 catalog) published, signed")
        self.say(f"      public key {server.public_key}")

    def run_devices(self) -> None:
        data, server = self.need_data(), self.need_server()
        plans = [device_events(data.heldout, users) for users in data.devices]
        for d, events in enumerate(plans):
            capped = d == len(plans) - 1
            self.devices.append(
                Device(
                    f"phone-{d + 1}", self.out / "devices" / f"phone-{d + 1}", server,
                    max_pending_events=max(1, int(len(events) * OUTBOX_CAP_FRACTION))
                    if capped else None,
                    timeout=LOST_REPLY_TIMEOUT if d == 0 else 10.0,
                )
            )  # fmt: skip
        for device in self.devices:
            device.pull_first_bundle()
        server.thread.stop()
        self.say("      network down: the devices work offline")
        for device, events in zip(self.devices, plans, strict=True):
            device.replay(events)
        self.devices[0].sync(expect_offline=True)
        server.thread.start()
        self.say("      network back: the devices sync (one reply is lost on purpose)")
        self._lose_next_reply()
        for device in self.devices:
            device.sync()

    def _lose_next_reply(self) -> None:
        from pocketrec.server.faults import Fault

        self.need_server().faults.add(Fault(delay=2 * LOST_REPLY_TIMEOUT, after_commit=True))

    def retrain(self) -> None:
        from pocketrec.core.loaders import load

        data, server = self.need_data(), self.need_server()
        feedback_csv = self.out / "feedback.csv"
        rows = server.export_feedback(feedback_csv)
        feedback, _report = load(feedback_csv, format="csv")
        combined = merge(data.train, feedback, "version 1's training data + device feedback")
        self.facts["retraining"] = {
            "data": f"version 1's training data ({data.train.num_interactions:,} events) plus "
            f"the {rows:,} events exported from the server (`{feedback_csv.name}`)",
            "feedback_rows": rows,
            "training_events": combined.num_interactions,
        }
        self.say(f"      exported {rows:,} events; training on {combined.num_interactions:,}")
        self._train(2, combined, ("int8",))
        server.publish(self.versions[2].bundles["int8"])
        for device in self.devices:
            device.sync()
            version = device.recommender.info()["model_version"]
            if version != 2:
                raise DemoError(f"{device.name} serves version {version} after sync, not 2")
        self.say("      every device installed version 2 in place")

    def dismissal(self) -> dict[str, Any]:
        """The first device's first user dismisses the top item of their list."""
        device = self.devices[0]
        user = self.need_data().devices[0][0]
        titles = self.need_data().titles()
        before, _ = device.recommender.recommend(RECOMMEND_K, user=user)
        device.observe(before[0], "dismiss", user)
        after, _ = device.recommender.recommend(RECOMMEND_K, user=user)
        name = {i: titles.get(i, i) for i in {*before, *after}}
        return {
            "device": device.name,
            "user": user,
            "model_version": device.recommender.info()["model_version"],
            "dismissed": name[before[0]],
            "before": [name[i] for i in before],
            "after": [name[i] for i in after],
        }

    def finish(self) -> dict[str, Any]:
        """The dismissal, a last sync, the measurements and the checks."""
        self.facts["dismissal"] = self.dismissal()
        for device in self.devices:
            device.sync()
        self.facts["events"] = self.event_counts()
        self.need_server().thread.stop()
        return self.measure()

    def event_counts(self) -> dict[str, int]:
        counts = {
            "logged": sum(d.logged for d in self.devices),
            "dropped_by_outbox_cap": sum(d.dropped for d in self.devices),
            "uploaded": sum(d.counts.uploaded for d in self.devices),
            "stored_on_server": self.need_server().stored_events(),
            "resent_and_deduplicated": sum(
                d.counts.uploaded - d.counts.new_on_server for d in self.devices
            ),
            "still_pending": sum(d.pending for d in self.devices),
            "offline_sync_passes": sum(d.counts.offline_passes for d in self.devices),
        }
        expected = counts["logged"] - counts["dropped_by_outbox_cap"]
        if not counts["uploaded"] == counts["stored_on_server"] == expected:
            raise DemoError(f"events do not add up: {counts}")
        if counts["still_pending"]:
            raise DemoError(f"{counts['still_pending']} events were never uploaded")
        return counts

    def measure(self) -> dict[str, Any]:
        data = self.need_data()
        accuracy = {
            "popularity (v1 training data)": popularity_accuracy(data.train, data.heldout),
            "version 1, float32 catalog": bundle_accuracy(
                self.versions[1].bundles["float32"], data.heldout
            ),
            "version 1, int8 catalog": bundle_accuracy(
                self.versions[1].bundles["int8"], data.heldout
            ),
            "version 2, int8 catalog": bundle_accuracy(
                self.versions[2].bundles["int8"], data.heldout
            ),
        }
        if not all(all_finite(m) for m in accuracy.values()):
            raise DemoError(f"non-finite metrics: {accuracy}")
        latency = Latencies()
        for device in self.devices:
            latency.merge(device.latency)
        return {"accuracy": accuracy, "latency": latency}


def _bundle_sizes(versions: dict[int, TrainedVersion]) -> dict[str, dict[str, Any]]:
    return {
        f"version {v}, {dtype} catalog": {"total": sum(sizes.values()), "files": sizes}
        for v, trained in versions.items()
        for dtype, sizes in trained.sizes.items()
    }


def _plots(run: DemoRun, accuracy: dict[str, dict[str, float]], latency: Latencies) -> list[str]:
    d = run.facts["dismissal"]
    out = run.out
    paths = [
        latency_histogram(latency.ordered(), out / "latency.png"),
        metrics_bars(accuracy, REPORTED, out / "metrics.png"),
        dismissal_lists(
            d["before"], d["after"], d["dismissed"],
            f"user {d['user']} on {d['device']}, model version {d['model_version']}",
            out / "dismissal.png",
        ),
    ]  # fmt: skip
    return [p.name for p in paths]


def build_report(run: DemoRun, measured: dict[str, Any], wall: float) -> dict[str, Any]:
    """Everything ``report.json`` holds (``report.md`` renders it)."""
    data = run.need_data()
    accuracy: dict[str, dict[str, float]] = measured["accuracy"]
    latency: Latencies = measured["latency"]
    info = run.devices[0].recommender.info()
    return {
        "setup": {
            "data": run.options.describe(),
            "devices": len(run.devices),
            "heldout_users": data.heldout.num_users,
            "training_users": data.train.num_users,
            "fast": run.options.fast,
        },
        "versions": sorted(run.versions),
        "accuracy": accuracy,
        "latency_ms": {k: percentiles_ms(v) for k, v in latency.ordered().items()},
        "events": run.facts["events"],
        "bundles": _bundle_sizes(run.versions),
        "parity": {str(v): t.parity for v, t in run.versions.items()},
        "retraining": run.facts["retraining"],
        "dismissal": run.facts["dismissal"],
        "device": {"interpreter": info["interpreter"], "backend": info["backend"]},
        "plots": _plots(run, accuracy, latency),
        "steps": run.steps,
        "wall_seconds": wall,
    }


def print_summary(report: dict[str, Any], stream: TextIO) -> None:
    """A few lines: accuracy per model, latency, events."""
    for name, m in report["accuracy"].items():
        values = "  ".join(f"{k}={m[k]:.4f}" for k in REPORTED)
        print(f"  {name:<31} {values}", file=stream)
    for kind, stats in report["latency_ms"].items():
        print(
            f"  {kind:<9} p50 {stats['p50']:.3f} ms  p90 {stats['p90']:.3f} ms  "
            f"p99 {stats['p99']:.3f} ms  ({stats['calls']:.0f} calls)",
            file=stream,
        )
    print("  events: " + ", ".join(f"{k} {v:,}" for k, v in report["events"].items()), file=stream)


def run_demo(options: DemoOptions, stream: TextIO | None = None) -> Path:
    """Run the five steps (module docstring); returns the path of ``report.md``. ``stream``:
    where progress and the summary go (default: ``sys.stdout`` at call time)."""
    stream = sys.stdout if stream is None else stream
    start = time.perf_counter()
    prepare_out(options.out, options.force)
    run = DemoRun(options, stream)
    try:
        with run.step(1, "train the interest model and convert it (float32, int8)"):
            run.train_v1()
        with run.step(2, "start the sync server on loopback and publish version 1, signed"):
            run.start_server()
        with run.step(3, "devices pull version 1, replay their users offline, then sync"):
            run.run_devices()
        with run.step(4, "export the feedback, train version 2, devices update in place"):
            run.retrain()
        with run.step(5, "measure and write the report"):
            measured = run.finish()
            report = build_report(run, measured, time.perf_counter() - start)
            path = write_report(options.out, report)
    finally:
        for device in run.devices:
            device.close()
        if run.server is not None:
            run.server.thread.stop()
    print_summary(report, stream)
    return path
