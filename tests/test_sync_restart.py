"""Issue 14, cases 0 and 1: the README's flow keeps an installed update across restarts, and a
correctly signed but broken bundle never becomes active, is never retried, and never bricks the
next start — with and without an earlier bundle recorded in the store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from broken_bundles import make_broken
from conftest import BUNDLE_FIXTURE, SyncHarness, bundle_version

from pocketrec.core.errors import BundleError
from pocketrec.runtime import Recommender
from pocketrec.runtime.sync.bundles import BundleUpdate
from pocketrec.storage import Store

BROKEN_CASES = ("truncated_step", "state_dim_off_by_one", "items_one_short")
"""The audit's correctly signed but broken bundles (``tests/broken_bundles.py``)."""


def broken_copy(target: Path, case: str, model_version: int) -> Path:
    """The fixture as ``model_version``, broken as ``case`` says, its manifest's lengths and
    SHA-256s matching (what a buggy publisher would sign)."""
    source = bundle_version(
        BUNDLE_FIXTURE, target.with_name(f"{target.name}-source"), model_version
    )
    return make_broken(source, target, case)


def open_app(store: Store) -> Recommender:
    """What the README tells an app to call at every start."""
    return Recommender.open(BUNDLE_FIXTURE, db=store)


def pull(rec: Recommender, server: SyncHarness, token: str) -> BundleUpdate:
    """One sync pass with bundle updates; its bundle outcome."""
    report = rec.sync(server.url, token, public_key=server.public_key)
    assert report.bundle is not None
    assert report.ok == (report.bundle.status != "rejected")
    return report.bundle


def test_issue14_an_installed_update_survives_restarts(
    tmp_path: Path, sync_server: SyncHarness
) -> None:
    sync_server.publish(2)
    token = sync_server.add_device("phone")
    with Store.open(tmp_path / "device.sqlite") as store:
        with open_app(store) as rec:
            assert rec.info()["bundle_choice"]["source"] == "shipped"
            update = pull(rec, sync_server, token)
            assert update.status == "installed"
            assert rec.info()["model_version"] == 2
        for _restart in range(2):
            with open_app(store) as rec:
                info = rec.info()
                assert info["model_version"] == 2
                assert info["bundle_choice"]["source"] == "installed"
                assert info["bundle"] == str(update.path)
                assert pull(rec, sync_server, token).status == "up_to_date"


def test_a_newer_shipped_bundle_wins_over_an_older_installed_one(
    tmp_path: Path, sync_server: SyncHarness
) -> None:
    sync_server.publish(2)
    token = sync_server.add_device("phone")
    with Store.open(tmp_path / "device.sqlite") as store:
        with open_app(store) as rec:
            assert pull(rec, sync_server, token).status == "installed"
        app_update = bundle_version(BUNDLE_FIXTURE, tmp_path / "app-v5", 5)  # a new app release
        with Recommender.open(app_update, db=store) as rec:
            assert rec.info()["model_version"] == 5
            assert rec.info()["bundle_choice"]["source"] == "shipped"
        assert store.active_bundle() is None  # the store follows what is served


def test_a_deleted_bundle_folder_falls_back_to_the_previous_good_one(
    tmp_path: Path, sync_server: SyncHarness
) -> None:
    token = sync_server.add_device("phone")
    with Store.open(tmp_path / "device.sqlite") as store:
        paths = []
        for version in (2, 3):
            sync_server.publish(version)
            with open_app(store) as rec:
                update = pull(rec, sync_server, token)
                assert update.path is not None
                paths.append(update.path)
        shutil.rmtree(paths[1])  # e.g. the app's data folder was cleaned
        with open_app(store) as rec:
            info = rec.info()
            assert info["model_version"] == 2
            assert info["bundle_choice"]["source"] == "installed"
            (skipped,) = info["bundle_choice"]["skipped"]
            assert skipped["model_version"] == 3
            assert "missing" in skipped["reason"] or "no manifest" in skipped["reason"]
        shutil.rmtree(paths[0])
        with open_app(store) as rec:
            assert rec.info()["model_version"] == 1
            assert rec.info()["bundle_choice"]["source"] == "shipped"
        failed = {r.model_version: r.failure for r in store.installed_bundles() if not r.good}
        assert set(failed) == {2, 3}
        with open_app(store) as rec:  # no loop: version 3 is not fetched again
            assert pull(rec, sync_server, token).status == "failed_before"
            assert rec.info()["model_version"] == 1


@pytest.mark.parametrize("earlier", [False, True], ids=["nothing-recorded", "v1-recorded"])
@pytest.mark.parametrize("case", BROKEN_CASES)
def test_issue14_a_broken_signed_bundle_never_becomes_active(
    tmp_path: Path, sync_server: SyncHarness, case: str, earlier: bool
) -> None:
    source = broken_copy(tmp_path / "broken", case, 2)
    published = Path(sync_server.server.bundles.publish(source, sync_server.private_key).path)
    token = sync_server.add_device("phone")
    (tmp_path / "device").mkdir()
    with Store.open(tmp_path / "device" / "device.sqlite") as store:
        if earlier:
            installed = bundle_version(BUNDLE_FIXTURE, tmp_path / "device" / "bundles" / "v1", 1)
            store.add_bundle(1, installed, "0" * 64, activate=True)
        before = store.active_bundle()
        with open_app(store) as rec:
            update = pull(rec, sync_server, token)
            assert update.status == "rejected"
            assert rec.info()["model_version"] == 1
        assert store.active_bundle() == before
        (failed,) = [r for r in store.installed_bundles() if not r.good]
        assert failed.model_version == 2
        assert failed.failure == update.reason
        assert not list((tmp_path / "device" / "bundles").glob(".incoming-*"))
        assert not (tmp_path / "device" / "bundles" / "v2").exists()
        for _restart in range(2):  # the next starts open the previous bundle, never the broken one
            with open_app(store) as rec:
                assert rec.info()["model_version"] == 1
                again = pull(rec, sync_server, token)
                assert again.status == "failed_before"  # not downloaded again
                assert again.reason == failed.failure
    assert published.is_dir()


def test_replace_bundle_is_kept_across_restarts_and_a_broken_one_changes_nothing(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path / "device.sqlite") as store:
        with open_app(store) as rec:
            rec.replace_bundle(bundle_version(BUNDLE_FIXTURE, tmp_path / "v3", 3))
            assert rec.info()["bundle_choice"]["source"] == "replaced"
            for number, case in enumerate(BROKEN_CASES, start=4):
                broken = broken_copy(tmp_path / f"v{number}", case, number)
                with pytest.raises(BundleError):
                    rec.replace_bundle(broken)
                assert rec.info()["model_version"] == 3
            assert [r.model_version for r in store.installed_bundles()] == [3]
        with open_app(store) as rec:
            assert rec.info()["model_version"] == 3
            assert rec.info()["bundle_choice"]["source"] == "installed"
