"""Pulling bundles from a real server: verified install and swap, every rejection path, resumed
downloads, and crashes (SIGKILL) during download and swap."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BUNDLE_FIXTURE, SyncHarness, bundle_version

from pocketrec.core.bundle import read_manifest, verify_bundle
from pocketrec.runtime import Recommender
from pocketrec.runtime.sync import SyncClient
from pocketrec.server.signing import generate_key
from pocketrec.storage import Store


def device(tmp_path: Path, name: str = "device") -> tuple[Store, Path]:
    """A store with the shipped bundle installed as version 1 (active)."""
    folder = tmp_path / name
    folder.mkdir()
    store = Store.open(folder / "device.sqlite")
    shipped = bundle_version(BUNDLE_FIXTURE, folder / "bundles" / "v1", 1)
    store.add_bundle(1, shipped, "0" * 64, activate=True)
    return store, shipped


def test_a_newer_bundle_is_installed_and_served_and_the_old_one_kept(
    tmp_path: Path, sync_server: SyncHarness
) -> None:
    sync_server.publish(2)
    token = sync_server.add_device("phone")
    store, shipped = device(tmp_path)
    with store, Recommender.open(BUNDLE_FIXTURE, db=store) as rec:
        rec.observe("i00001")
        report = rec.sync(sync_server.url, token, public_key=sync_server.public_key)
        assert report.ok, report
        assert report.bundle is not None
        assert report.bundle.status == "installed"
        assert rec.info()["model_version"] == 2
        assert report.upload.uploaded == 1
        active = store.active_bundle()
        assert active is not None
        assert active.model_version == 2
        assert verify_bundle(Path(active.path)).model_version == 2
        assert [b.model_version for b in store.installed_bundles()] == [1, 2]
        assert verify_bundle(shipped).model_version == 1  # kept for a rollback
        again = rec.sync(sync_server.url, token, public_key=sync_server.public_key)
        assert again.bundle is not None
        assert again.bundle.status == "up_to_date"


def _tamper_manifest(server: SyncHarness, published: Path) -> None:
    """A compromised server: the manifest changed on disk and in the database's record (the
    signature no longer matches it)."""
    manifest = json.loads((published / "manifest.json").read_text())
    manifest["num_items"] += 1
    server.compromise_bundle(2, manifest=json.dumps(manifest).encode())


def _bad_signature(server: SyncHarness, published: Path) -> None:
    record = server.bundle_record(2)
    sig = bytearray(record.signature)
    sig[5] ^= 0x01
    server.compromise_bundle(2, signature=bytes(sig))


def _truncate(_server: SyncHarness, published: Path) -> None:
    data = (published / "step.tflite").read_bytes()
    (published / "step.tflite").write_bytes(data[: len(data) // 2])


def _flip_bit(_server: SyncHarness, published: Path) -> None:
    data = bytearray((published / "catalog.npy").read_bytes())
    data[-3] ^= 0x10
    (published / "catalog.npy").write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("tampered manifest", "signature"),
        ("bad signature", "signature"),
        ("wrong key", "signature"),
        ("truncated file", "step.tflite"),
        ("bit-flipped file", "catalog.npy"),
        ("older version", "older"),
    ],
)
def test_a_bad_bundle_is_rejected_and_the_active_one_stays(
    tmp_path: Path, sync_server: SyncHarness, case: str, reason: str
) -> None:
    store, _shipped = device(tmp_path)
    if case == "older version":
        store.add_bundle(3, bundle_version(BUNDLE_FIXTURE, tmp_path / "v3", 3), "1" * 64)
        store.activate_bundle(3)
    published = sync_server.publish(2)
    key = sync_server.public_key
    if case == "wrong key":
        key = generate_key(tmp_path / "other-key")
    else:
        {
            "tampered manifest": _tamper_manifest,
            "bad signature": _bad_signature,
            "truncated file": _truncate,
            "bit-flipped file": _flip_bit,
        }.get(case, lambda _s, _p: None)(sync_server, published)
    before = store.active_bundle()
    token = sync_server.add_device("phone")
    with store, Recommender.open(BUNDLE_FIXTURE, db=store) as rec:
        served = rec.info()["model_version"]
        report = rec.sync(sync_server.url, token, public_key=key)
        assert report.bundle is not None
        assert report.bundle.status == "rejected"
        assert reason in report.bundle.reason
        assert not report.ok
        assert rec.info()["model_version"] == served
        assert store.active_bundle() == before
        assert not (store.path.parent / "bundles" / "v2").exists()
        assert not list((store.path.parent / "bundles").glob(".incoming-*"))


def test_an_interrupted_download_resumes_with_a_range_request(
    tmp_path: Path, sync_server: SyncHarness
) -> None:
    published = sync_server.publish(2)
    store, _ = device(tmp_path)
    staging = store.path.parent / "bundles" / ".incoming-v2"
    staging.mkdir()
    head = (published / "step.tflite").read_bytes()[:4000]
    (staging / "step.tflite.part").write_bytes(head)
    seen: list[tuple[str, int]] = []
    token = sync_server.add_device("phone")
    with store:
        report = SyncClient(
            store,
            sync_server.url,
            token,
            public_key=sync_server.public_key,
            chunk_bytes=1024,
            progress=lambda stage, amount: seen.append((stage, amount)),
        ).run()
        assert report.ok
        assert report.bundle is not None
        assert report.bundle.status == "installed"
    downloads = [amount for stage, amount in seen if stage == "download:step.tflite"]
    assert downloads[0] == 4000 + 1024  # continued after the 4000 bytes already there
    assert [stage for stage, _ in seen[-4:]] == ["verified", "proven", "renamed", "recorded"]


CHILD = """
import os, signal, sys
from pocketrec.runtime.sync import SyncClient
from pocketrec.storage import Store

store_path, url, token, key, stage, count = sys.argv[1:7]

def progress(name, amount):
    # downloads: die once the file holds `count` bytes (resumed runs continue counting)
    if name == stage and (not name.startswith("download:") or amount >= int(count)):
        os.kill(os.getpid(), signal.SIGKILL)

with Store.open(store_path) as store:
    SyncClient(store, url, token, public_key=key, chunk_bytes=1024, progress=progress).run()
"""


def _assert_complete_active_bundle(store_path: Path) -> int:
    with Store.open(store_path) as store:
        active = store.active_bundle()
        assert active is not None
        manifest = verify_bundle(Path(active.path))  # every file complete and matching
        assert manifest.model_version == active.model_version
        assert read_manifest(Path(active.path)) == manifest
        return active.model_version


@pytest.mark.slow
def test_a_crash_during_download_or_swap_leaves_a_complete_old_or_new_bundle(
    tmp_path: Path, sync_server: SyncHarness
) -> None:
    sync_server.publish(2)
    rng = random.Random(6)
    points = [("download:catalog.npy", 1)]
    points += [("download:step.tflite", 1024 * n) for n in range(1, 10)]
    points += [("verified", 0), ("proven", 0), ("renamed", 0), ("recorded", 0)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for round_ in range(3):
        store, _ = device(tmp_path, f"device{round_}")
        store.close()
        token = sync_server.add_device(f"phone{round_}")
        versions = []
        for stage, count in sorted(rng.sample(points, 4), key=points.index):
            child = subprocess.run(
                [sys.executable, "-c", CHILD, str(store.path), sync_server.url, token,
                 sync_server.public_key, stage, str(count)],
                env=env, capture_output=True, timeout=60, check=False,
            )  # fmt: skip
            assert child.returncode == -signal.SIGKILL, child.stderr.decode()
            versions.append(_assert_complete_active_bundle(store.path))
        assert versions == sorted(versions)  # never back to the old one once switched
        with Store.open(store.path) as reopened:
            report = SyncClient(
                reopened, sync_server.url, token, public_key=sync_server.public_key
            ).run()
            assert report.error is None
        assert _assert_complete_active_bundle(store.path) == 2
