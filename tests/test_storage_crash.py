"""Crash safety: SIGKILL a writing child at random moments, 200 rounds (``tools/soak_storage.py``
runs the same rounds 1,000+ times). A SIGKILL loses nothing the process wrote to the OS: power
loss is ``tests/test_storage_powerloss.py``'s."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from tool_modules import load_tool

from pocketrec.storage import Store

soak = load_tool("soak_storage")
crash_workload = load_tool("crash_workload")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def test_200_sigkills_with_full_durability_lose_no_acknowledged_write(tmp_path: Path) -> None:
    report = soak.soak(str(tmp_path), rounds=200, durability="full", seed=20_261_130)
    assert report.rounds == 200
    assert report.files == 8
    # soak() found every acknowledged call after each kill (SoakFailure otherwise): how many there
    # were depends on the machine's load (485 to 2,472 seen), but each of the 20 rounds killed
    # after its writer's first acknowledged call has at least one, however slow the machine
    assert report.rounds_after_ack == 20
    assert report.acknowledged >= report.rounds_after_ack


def test_normal_durability_also_survives_a_killed_process(tmp_path: Path) -> None:
    report = soak.soak(str(tmp_path), rounds=40, durability="normal", seed=7)
    assert report.rounds == 40
    assert report.acknowledged >= report.rounds_after_ack == 4


def test_the_checker_notices_a_lost_event_and_a_partial_batch(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite")
    acked = crash_workload.Acked()
    with Store.open(path) as store:
        event = store.append(crash_workload.USER, "i", "view", context={"txn": "t1", "n": 1})
        assert event is not None
    seq = str(event.seq)
    soak.record(acked, [("A", seq, seq, "t1")], seed=1)
    assert soak.verify(path, "full", acked, seed=1) == 1

    other = crash_workload.Acked()  # the seq is there, but holds another call's event
    soak.record(other, [("A", seq, seq, "t0")], seed=1)
    with pytest.raises(soak.SoakFailure, match="1 acknowledged events lost"):
        soak.verify(path, "full", other, seed=1)

    later = str(event.seq + 5)
    soak.record(acked, [("A", later, later, "t5")], seed=1)  # never written
    with pytest.raises(soak.SoakFailure, match="acknowledged events lost"):
        soak.verify(path, "full", acked, seed=1)

    partial = crash_workload.Acked()
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
    acked = crash_workload.Acked()
    soak.record(acked, [("A", "1", "5", "t1")], seed=3)
    with pytest.raises(soak.SoakFailure, match="seq 5 reused"):
        soak.record(acked, [("A", "5", "6", "t2")], seed=3)
