"""The feedback loop over a real server: two devices observe offline, sync, the server exports
the feedback (CSV and day-partitioned Parquet), `pocketrec train` reads the Parquet folder, and
the new bundle is published, pulled and served."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import RuntimeBundles, SyncHarness

from pocketrec.cli import main
from pocketrec.core import load
from pocketrec.runtime import Recommender
from pocketrec.storage import Store

pytest.importorskip("tensorflow", reason="training the next bundle needs the `convert` extra")

CYCLE = [f"i{k:05d}" for k in range(100, 120)]
"""Every user walks this ring of 20 items in order: the pattern the retrained model must learn."""


def walk(rec: Recommender, user: str, start: int, steps: int) -> None:
    for k in range(steps):
        rec.observe(CYCLE[(start + k) % len(CYCLE)], "click", user=user)


def train_bundle(data: Path, work: Path, model_version: int) -> Path:
    """``pocketrec train --data DATA`` then ``pocketrec convert``: the bundle's directory."""
    model, bundle = work / "model", work / "bundle"
    args = ["train", "--data", str(data), "--out", str(model), "--embedding-dim", "16",
            "--hidden-dim", "32", "--user-dim", "16", "--learning-rate", "1e-2",
            "--max-epochs", "12", "--patience", "12", "--seed", "0"]  # fmt: skip
    assert main(args) == 0
    args = ["convert", str(model), "--out", str(bundle), "--model-version", str(model_version)]
    assert main(args) == 0
    return bundle


def test_two_devices_feed_the_next_bundle_and_use_it(
    tmp_path: Path, sync_server: SyncHarness, runtime_bundles: RuntimeBundles
) -> None:
    tokens = [sync_server.add_device(name) for name in ("phone", "tablet")]
    sync_server.server.stop()  # the devices start offline
    rng = random.Random(0)
    stores = [Store.open(tmp_path / f"{name}.sqlite") for name in ("phone", "tablet")]
    recs = [Recommender.open(runtime_bundles.f32, db=s) for s in stores]
    try:
        for d, rec in enumerate(recs):
            for u in range(80):
                walk(rec, f"user{u}", rng.randrange(len(CYCLE)), 12)
            offline = rec.sync(sync_server.url, tokens[d], public_key=sync_server.public_key,
                               sleep=lambda _s: None)  # fmt: skip
            assert offline.offline
            assert stores[d].stats().pending_events == 80 * 12

        sync_server.server.start()
        for d, rec in enumerate(recs):
            report = rec.sync(sync_server.url, tokens[d], public_key=sync_server.public_key)
            assert report.ok, report
            assert report.upload.uploaded == 80 * 12
            assert report.bundle is not None
            assert report.bundle.status == "none_published"
        feedback = tmp_path / "feedback.csv"
        assert main(["export-feedback", "--db", sync_server.db, "--out", str(feedback)]) == 0
        assert len(feedback.read_text().splitlines()) == 1 + 2 * 80 * 12
        days = tmp_path / "feedback"  # the same events as day-partitioned Parquet
        assert main(["export-feedback", "--db", str(sync_server.db), "--out", str(days),
                     "--format", "parquet"]) == 0  # fmt: skip
        assert load(days)[0] == load(feedback)[0]

        bundle = train_bundle(days, tmp_path / "train", model_version=7)
        code = main(
            ["publish", str(bundle), "--server-dir", str(sync_server.published),
             "--key", str(sync_server.root / "key"), "--db", sync_server.db]
        )  # fmt: skip
        assert code == 0

        probe = "probe"
        walk(recs[0], probe, 3, 5)  # last item CYCLE[7]: the next one is CYCLE[8]
        before = recs[0].recommend(5, user=probe)[0]
        report = recs[0].sync(sync_server.url, tokens[0], public_key=sync_server.public_key)
        assert report.ok
        assert report.bundle is not None
        assert report.bundle.status == "installed"
        assert recs[0].info()["model_version"] == 7
        with Recommender.open(runtime_bundles.f32, db=stores[0]) as restarted:  # as after a restart
            assert restarted.info()["bundle"] == str(report.bundle.path)
            assert restarted.info()["model_version"] == 7
        after = recs[0].recommend(5, user=probe)[0]
        assert after != before
        assert set(after) <= set(CYCLE)  # the new catalog is what the devices used
        assert CYCLE[8] in after[:3]  # it learned the walk the devices reported
    finally:
        for rec in recs:
            rec.close()
        for store in stores:
            store.close()
