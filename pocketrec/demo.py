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
   installs it in place (``replace_bundle``) on its next sync. With the synthetic data the
   devices' users come after a release of new items (``demo_data``): only the uploaded feedback
   holds them, so only version 2 can recommend them.
5. One user dismisses the top item of their list (before/after shown with titles); everything is
   measured and plotted (PNG files in the output folder); then ``report.md`` and ``report.json``
   are written.

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
from pocketrec.demo_models import (
    DEMO_TRAINING,
    MAX_EPOCHS,
    TINY_MODEL,
    TrainedVersion,
    train_version,
)
from pocketrec.demo_plots import dismissal_lists, latency_histogram, metrics_bars
from pocketrec.demo_report import (
    REPORTED,
    accuracy_by_target,
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
    def model(self) -> dict[str, Any]:
        """``ModelConfig`` overrides: the demo's training settings, a tiny model with ``fast``."""
        return {**DEMO_TRAINING, **(TINY_MODEL if self.fast else {})}

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
            max_epochs=MAX_EPOCHS, overrides=o.model, seed=o.seed,
        )  # fmt: skip
        self.versions[version] = trained
        self.say(
            f"      version {version}: best epoch {trained.best_epoch} of {trained.epochs} "
            + ("(stopped early)" if trained.stopped_early else "(epoch cap)")
            + f", {trained.train_seconds:.1f} s; parity max |diff| "
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
        self.facts["logged_at_export"] = sum(d.logged for d in self.devices)
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
        """The event counts of the report (``demo_report.EVENT_COUNTS`` says what each is)."""
        logged = sum(d.logged for d in self.devices)
        counts = {
            "logged": logged,
            "dropped_by_outbox_cap": sum(d.dropped for d in self.devices),
            "uploaded": sum(d.counts.uploaded for d in self.devices),
            "stored_on_server": self.need_server().stored_events(),
            "resent_and_deduplicated": sum(
                d.counts.uploaded - d.counts.new_on_server for d in self.devices
            ),
            "exported_for_version_2": self.facts["retraining"]["feedback_rows"],
            "logged_after_export": logged - self.facts["logged_at_export"],
            "still_pending": sum(d.pending for d in self.devices),
            "offline_sync_passes": sum(d.counts.offline_passes for d in self.devices),
        }
        expected = counts["logged"] - counts["dropped_by_outbox_cap"]
        if not counts["uploaded"] == counts["stored_on_server"] == expected:
            raise DemoError(f"events do not add up: {counts}")
        after = counts["stored_on_server"] - counts["exported_for_version_2"]
        if after != counts["logged_after_export"]:
            raise DemoError(f"the export missed {after - counts['logged_after_export']} events")
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
        by_target = accuracy_by_target(
            self.versions[1].bundles["int8"], self.versions[2].bundles["int8"], data
        )
        return {"accuracy": accuracy, "latency": latency, "by_target": by_target}


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


def build_report(run: DemoRun, measured: dict[str, Any]) -> dict[str, Any]:
    """Everything ``report.json`` holds (``report.md`` renders it) but ``wall_seconds``; its
    ``steps`` is the run's own list, so it holds step 5 once that step ends."""
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
            "new_items": len(set(data.heldout.items.ids) - set(data.train.items.ids)),
            "release": run.options.data is None,  # synthetic: new items after version 1
            "fast": run.options.fast,
        },
        "versions": sorted(run.versions),
        "accuracy": accuracy,
        "by_target": measured["by_target"],
        "latency_ms": {k: percentiles_ms(v) for k, v in latency.ordered().items()},
        "events": run.facts["events"],
        "bundles": _bundle_sizes(run.versions),
        "parity": {str(v): t.parity for v, t in run.versions.items()},
        "training": {
            str(v): {
                "seconds": t.train_seconds,
                "epochs": t.epochs,
                "best_epoch": t.best_epoch,
                "stopped_early": t.stopped_early,
            }
            for v, t in run.versions.items()
        },
        "retraining": run.facts["retraining"],
        "dismissal": run.facts["dismissal"],
        "device": {"interpreter": info["interpreter"], "backend": info["backend"]},
        "plots": _plots(run, accuracy, latency),
        "steps": run.steps,
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
        with run.step(5, "a user dismisses an item; measure everything and draw the plots"):
            measured = run.finish()
            report = build_report(run, measured)
        report["wall_seconds"] = time.perf_counter() - start  # all five steps, then the files
        path = write_report(options.out, report)
    finally:
        for device in run.devices:
            device.close()
        if run.server is not None:
            run.server.thread.stop()
    print_summary(report, stream)
    return path
