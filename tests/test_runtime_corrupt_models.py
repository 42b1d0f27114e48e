"""Corrupted but correctly hashed step models (issue 14): opened by ``open_bundle`` in a worker
process, each must be refused with a ``BundleError`` naming the bundle's file, or pass the proof;
never another exception, a crash or a hang (which fail the test naming the seed).

Model ``i`` of a source bundle is ``broken_bundles.corrupt_model(step.tflite, seed)`` with seed
``POCKETREC_FUZZ_SEED + i``; the seeds cycle through the strategies (bit flips, byte overwrites,
truncations, splices, edits of tensor shapes, indices, vector lengths and float weights).
``POCKETREC_FUZZ_MODELS`` sets the number per source bundle (default 32); ``-s`` shows the
outcome counts:

    POCKETREC_FUZZ_MODELS=300 python -m pytest -s tests/test_runtime_corrupt_models.py

Only the committed fixture and the runtime bundles are used (no TensorFlow), so CI's second leg
runs this under ``tflite_runtime`` too.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broken_bundles import STRATEGIES, make_corrupted
from bundle_worker import BundleOpener

from pocketrec.core import bundle as fmt
from pocketrec.core.bundle import verify_bundle

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "bundle_v1"
FUZZ_MODELS = int(os.environ.get("POCKETREC_FUZZ_MODELS", "32"))
FUZZ_SEED = int(os.environ.get("POCKETREC_FUZZ_SEED", "0"))


@pytest.fixture(scope="module")
def opener() -> Iterator[BundleOpener]:
    with BundleOpener() as worker:
        yield worker


@pytest.fixture(params=["fixture", "f32"])
def source(request: pytest.FixtureRequest, runtime_bundles: Any) -> Path:
    """The committed GRU bundle, and the converter's LRU bundle (float32 catalog)."""
    return FIXTURE if request.param == "fixture" else Path(runtime_bundles.f32)


def test_corrupted_step_models_are_refused_or_pass_the_proof(
    source: Path, opener: BundleOpener, tmp_path: Path
) -> None:
    counts: Counter[str] = Counter()
    failures = []
    for seed in range(FUZZ_SEED, FUZZ_SEED + FUZZ_MODELS):
        target = tmp_path / f"seed-{seed}"
        corruption = make_corrupted(source, target, seed)
        verify_bundle(target)  # consistently hashed: only the proof can refuse it
        outcome = opener.open(target)
        counts[outcome.kind] += 1
        named = outcome.detail.startswith(f"{target}{os.sep}")
        if outcome.kind not in ("refused", "loaded") or (outcome.kind == "refused" and not named):
            failures.append(f"{corruption}: {outcome.kind}: {outcome.detail}")
        shutil.rmtree(target)
    print(f"\n{FUZZ_MODELS} corrupted step models of {source.name}: {dict(counts)}")
    assert not failures, "\n".join(failures)
    if len(STRATEGIES) <= FUZZ_MODELS:
        assert counts["refused"] > 0


def test_a_crash_or_a_hang_of_the_worker_is_an_outcome() -> None:
    with BundleOpener(timeout=2) as worker:
        assert worker.open("!crash").kind == "crashed"
        assert worker.open("!hang").kind == "hung"
        worker.timeout = 120
        assert worker.open(FIXTURE).kind == "loaded"  # a new worker
        outcome = worker.open(FIXTURE.parent / "no-such-bundle")
        assert outcome.kind == "refused"
        assert outcome.detail.startswith(str(FIXTURE.parent / "no-such-bundle" / fmt.MANIFEST))
