"""Crash safety: SIGKILL a writing child at random moments, 200 rounds (``tools/soak_storage.py``
runs the same rounds 1,000+ times)."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pocketrec.storage import Store

TOOL = Path(__file__).resolve().parents[1] / "tools" / "soak_storage.py"

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak_storage", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


soak = load_soak()


def test_200_sigkills_with_full_durability_lose_no_acknowledged_write(tmp_path: Path) -> None:
    report = soak.soak(str(tmp_path), rounds=200, durability="full", seed=20_261_130)
    assert report.rounds == 200
    assert report.files == 8
    assert report.acknowledged > 1000  # the kills really landed among many writes


def test_normal_durability_also_survives_a_killed_process(tmp_path: Path) -> None:
    report = soak.soak(str(tmp_path), rounds=40, durability="normal", seed=7)
    assert report.rounds == 40
    assert report.acknowledged > 100


def test_the_checker_notices_a_lost_event_and_a_partial_batch(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite")
    acked = soak.Acked()
    with Store.open(path) as store:
        event = store.append(soak.USER, "i", "view", context={"txn": "t1", "n": 1})
        assert event is not None
    soak.record(acked, [("A", event.seq, event.seq)], seed=1)
    assert soak.verify(path, "full", acked, seed=1) == 1
    soak.record(acked, [("A", event.seq + 5, event.seq + 5)], seed=1)  # never written
    with pytest.raises(soak.SoakFailure, match="acknowledged events lost"):
        soak.verify(path, "full", acked, seed=1)

    partial = soak.Acked()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO events (event_id, user_id, item_id, event_type, ts, context, size) "
        "VALUES ('x', 'u', 'i', 0, 0, ?, 70)",
        (json.dumps({"txn": "t2", "n": 3}),),
    )
    conn.close()
    with pytest.raises(soak.SoakFailure, match="batch t2 has 1 of 3 events"):
        soak.verify(path, "full", partial, seed=2)


def test_a_reused_sequence_number_is_reported() -> None:
    acked = soak.Acked()
    soak.record(acked, [("A", 1, 5)], seed=3)
    with pytest.raises(soak.SoakFailure, match="seq 5 reused"):
        soak.record(acked, [("A", 5, 6)], seed=3)
