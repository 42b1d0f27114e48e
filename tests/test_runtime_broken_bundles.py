"""Signed but broken bundles (issue 14): every file's length and SHA-256 match the manifest, so
only ``open_bundle``'s proof can refuse them, with a ``BundleError`` naming the broken file.

Each case of ``broken_bundles.CASES`` is opened in a worker process (several used to crash the
interpreter or exhaust memory: a regression must fail this test, not kill pytest); the three of
the issue are also refused by ``Recommender.open`` in this process.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from broken_bundles import CASES, blow_up_item, make_broken
from bundle_worker import BundleOpener

from pocketrec import Recommender
from pocketrec.core import bundle as fmt
from pocketrec.core.errors import BundleError
from pocketrec.runtime.bundle import open_bundle

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bundle_v1"
ISSUE_CASES = ("truncated_step", "state_dim_off_by_one", "items_one_short")


@pytest.fixture(scope="module")
def opener() -> Iterator[BundleOpener]:
    with BundleOpener() as worker:
        yield worker


@pytest.fixture(params=["fixture", "f32", "int8"])
def source(request: pytest.FixtureRequest, runtime_bundles: Any) -> Path:
    """The committed GRU bundle, and the converter's LRU bundles (float32 and int8 catalogs)."""
    return FIXTURE if request.param == "fixture" else Path(getattr(runtime_bundles, request.param))


def _named_file(bundle: Path, case: str) -> Path:
    name = CASES[case]
    if name == "catalog":
        int8 = fmt.read_manifest(bundle).catalog_dtype == "int8"
        name = fmt.CATALOG_INT8_SCALES if int8 else fmt.CATALOG
    return bundle / name


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_signed_but_broken_bundle_is_refused_naming_the_file(
    case: str, source: Path, opener: BundleOpener, tmp_path: Path
) -> None:
    broken = make_broken(source, tmp_path / "broken", case)
    manifest = fmt.read_manifest(broken)
    assert all(fmt.file_entry(broken / name) == e for name, e in manifest.files.items())
    outcome = opener.open(broken)
    assert outcome.kind == "refused", outcome
    assert outcome.detail.startswith(f"{_named_file(broken, case)}: "), outcome.detail


@pytest.mark.parametrize("case", ISSUE_CASES)
def test_recommender_open_refuses_the_issue_cases(case: str, tmp_path: Path) -> None:
    broken = make_broken(FIXTURE, tmp_path / "broken", case)
    with pytest.raises(BundleError, match=f"^{re.escape(str(_named_file(broken, case)))}: "):
        Recommender.open(broken)


def test_the_good_bundles_pass_the_proof(opener: BundleOpener, runtime_bundles: Any) -> None:
    for bundle in (FIXTURE, runtime_bundles.f32, runtime_bundles.int8, runtime_bundles.v2):
        assert opener.open(bundle).kind == "loaded"


def test_a_manifest_nested_too_deep_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(FIXTURE, broken)
    (broken / fmt.MANIFEST).write_text("[" * 100_000, encoding="utf-8")
    with pytest.raises(BundleError, match=f"^{re.escape(str(broken / fmt.MANIFEST))}: not valid"):
        open_bundle(broken)


def test_make_broken_refuses_an_unknown_case_and_an_existing_target(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown case 'nope'"):
        make_broken(FIXTURE, tmp_path / "a", "nope")
    (tmp_path / "b").mkdir()
    with pytest.raises(FileExistsError):
        make_broken(FIXTURE, tmp_path / "b", "items_one_short")
    assert sorted(os.listdir(tmp_path)) == ["b"]


def test_an_item_whose_weights_blow_up_is_refused_per_event(
    runtime_bundles: Any, tmp_path: Path
) -> None:
    # passes the proof (it steps the first and last items), so only the event can catch it
    bundle = blow_up_item(runtime_bundles.f32, tmp_path / "blown", 5)
    ids = open_bundle(bundle).items.ids
    with Recommender.open(bundle, db=tmp_path / "device.sqlite") as rec:
        rec.observe(ids[0])
        before = rec.user_vector()
        with pytest.raises(BundleError, match=r"step\.tflite.*non-finite"):
            rec.observe(ids[5])
        assert np.array_equal(rec.user_vector(), before)  # not applied
        assert len(rec.recommend(5)[0]) == 5
        rec.observe(ids[1])  # the user goes on
    with Recommender.open(bundle, db=tmp_path / "device.sqlite") as restarted:
        assert restarted.info()["model_version"] == 1
