"""Power loss: a writer crashed by the ``crashvfs`` shim loses what it had not synced
(``tools/powerloss.py``; ``tests/powerloss/crashvfs.c`` says what the shim models).

With the default durability ("full") no acknowledged event may be lost at any crash point; with
"normal", or with ``synchronous=OFF`` forced, the same harness must see losses, which the SIGKILL
soak cannot. ``POCKETREC_LONG_TESTS=1`` runs 10x the crash points. Everything is seeded: the crash
points, the torn sectors and the writers' event ids.
"""

from __future__ import annotations

import ctypes
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from tool_modules import load_tool

from pocketrec.storage import Store

powerloss = load_tool("powerloss")
crash_workload = load_tool("crash_workload")
soak = load_tool("soak_storage")

SCALE = 10 if os.environ.get("POCKETREC_LONG_TESTS") == "1" else 1
OFF = "synchronous = OFF"

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def run_child(body: Callable[[], None]) -> int:
    """Run ``body`` in a forked child; its exit status (0 when ``body`` returns)."""
    _, code = crash_workload.finish_child(*crash_workload.start_child(lambda _: body()))
    return int(code)


def rows(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return [row[0] for row in conn.execute("SELECT x FROM t ORDER BY x")]
    finally:
        conn.close()


def write_and_crash(path: Path, shim: Path | None, *, torn: bool = False, seed: int = 0) -> int:
    """Child: three commits synced (FULL), three never synced (OFF), then the shim's crash point
    at the next write (without a shim the process just ends: what a SIGKILL keeps)."""

    def body() -> None:
        loaded = powerloss.Shim(shim) if shim is not None else None
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x INTEGER)")
        for x in range(6):
            if x == 3:
                conn.execute("PRAGMA synchronous = OFF")
            conn.execute("INSERT INTO t VALUES (?)", (x,))
        if loaded is not None:
            loaded.arm(1, seed=seed, torn=torn, report_fd=-1)
        conn.execute("INSERT INTO t VALUES (6)")
        os._exit(0)

    return run_child(body)


def test_the_shim_drops_every_write_since_the_last_sync(tmp_path: Path, shim: Path) -> None:
    assert write_and_crash(tmp_path / "killed.db", None) == 0
    assert rows(tmp_path / "killed.db") == list(range(7))  # the OS kept them all

    assert write_and_crash(tmp_path / "lost.db", shim) == powerloss.CRASH_EXIT
    assert rows(tmp_path / "lost.db") == [0, 1, 2]


def test_the_shim_reaches_pythons_sqlite_when_another_copy_is_loaded_globally(
    tmp_path: Path, shim: Path
) -> None:
    # TensorFlow exports a SQLite of its own globally: once it was imported (as it is earlier in
    # the same test run) a shim that bound to it registered its VFS there, and counted nothing
    decoy = tmp_path / "libsqlite3-decoy.so"
    decoy.write_bytes(Path(powerloss.sqlite_library()).read_bytes())

    def body() -> None:
        ctypes.CDLL(str(decoy), mode=ctypes.RTLD_GLOBAL)
        conn = sqlite3.connect(tmp_path / "decoy.db", isolation_level=None)
        conn.execute("CREATE TABLE t (x INTEGER)")
        loaded = powerloss.Shim(shim)
        conn = sqlite3.connect(tmp_path / "decoy.db", isolation_level=None)
        loaded.arm(1, seed=0, torn=False, report_fd=-1)
        conn.execute("INSERT INTO t VALUES (1)")
        os._exit(0)

    assert run_child(body) == powerloss.CRASH_EXIT


def test_torn_sectors_never_break_synced_commits(tmp_path: Path, shim: Path) -> None:
    assert write_and_crash(tmp_path / "drop.db", shim) == powerloss.CRASH_EXIT
    synced_wal = Path(f"{tmp_path / 'drop.db'}-wal").stat().st_size
    longer = 0
    for seed in range(12):
        path = tmp_path / f"torn-{seed}.db"
        assert write_and_crash(path, shim, torn=True, seed=seed) == powerloss.CRASH_EXIT
        longer += Path(f"{path}-wal").stat().st_size > synced_wal  # before reading: no checkpoint
        found = rows(path)
        assert found == list(range(len(found)))  # a prefix: WAL checksums reject torn frames
        assert len(found) >= 3
    assert longer > 0  # some crashes kept part of what was never synced


def test_a_new_file_exists_after_power_loss_only_once_its_directory_was_synced(
    tmp_path: Path, shim: Path
) -> None:
    def body(path: Path, synchronous: str) -> Callable[[], None]:
        def run() -> None:
            loaded = powerloss.Shim(shim)
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("CREATE TABLE t (x INTEGER)")
            conn.execute("INSERT INTO t VALUES (0)")
            loaded.arm(1, seed=0, torn=False, report_fd=-1)
            conn.execute("INSERT INTO t VALUES (1)")

        return run

    never_synced = tmp_path / "off.db"
    assert run_child(body(never_synced, "OFF")) == powerloss.CRASH_EXIT
    assert not never_synced.exists()
    assert not Path(f"{never_synced}-wal").exists()

    # the first sync of a new -wal also syncs the folder (SQLite's unix VFS does it; so does the
    # shim's model), which makes the database file's name durable too
    synced = tmp_path / "full.db"
    assert run_child(body(synced, "FULL")) == powerloss.CRASH_EXIT
    assert rows(synced) == [0]


def test_forced_pragmas_reach_every_connection_of_the_store(tmp_path: Path) -> None:
    with crash_workload.forced_pragmas([OFF]), Store.open(tmp_path / "s.sqlite") as store:
        # no public accessor for a pragma: read it on the store's own connection
        assert store._conns.handle().conn.execute("PRAGMA synchronous").fetchone()[0] == 0
    with Store.open(tmp_path / "s.sqlite") as store:
        assert store._conns.handle().conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_full_durability_loses_nothing_acknowledged_at_any_crash_point(
    tmp_path: Path, shim: Path
) -> None:
    points = 200 * SCALE
    report = powerloss.powerloss(str(tmp_path), shim=shim, points=points, seed=20_261_201)
    assert report.ok, report.summary()
    assert report.lost_events == 0
    assert report.points == points
    assert report.integrity_checked == report.integrity_ok == points
    assert 0 < report.torn < points  # both ways of losing power ran
    assert report.sites["write wal"] > 0  # crashes in the middle of a commit
    assert report.sites["sync wal"] > 0  # and at its sync
    assert report.acknowledged > 5 * points  # each crash came after several acknowledged calls


def test_full_durability_survives_crashes_inside_checkpoints(tmp_path: Path, shim: Path) -> None:
    # A checkpoint every 10 WAL pages instead of 1,000: the same code, 100x as often.
    points = 60 * SCALE
    report = powerloss.powerloss(
        str(tmp_path), shim=shim, points=points, pragmas=["wal_autocheckpoint = 10"], seed=5
    )
    assert report.ok, report.summary()
    assert report.integrity_ok == points
    assert report.sites["write db"] > 0  # crashes while a checkpoint copies pages
    assert report.sites["sync db"] > 0  # and at its sync


def test_normal_durability_loses_acknowledged_events_but_never_integrity(
    tmp_path: Path, shim: Path
) -> None:
    points = 30 * SCALE
    report = powerloss.powerloss(
        str(tmp_path), shim=shim, points=points, durability="normal", seed=11
    )
    assert report.lost_events > 0, report.summary()
    assert report.problems["lost events"] > 0
    assert report.integrity_checked == report.integrity_ok == points


def test_the_sigkill_soak_misses_synchronous_off_and_the_power_loss_harness_does_not(
    tmp_path: Path, shim: Path
) -> None:
    (tmp_path / "soak").mkdir()
    killed = soak.soak(str(tmp_path / "soak"), rounds=30 * SCALE, pragmas=[OFF], seed=3)
    # nothing acknowledged was lost (how much: the machine's load; >= 1 per round killed after one)
    assert killed.acknowledged >= killed.rounds_after_ack > 0

    report = powerloss.powerloss(
        str(tmp_path / "powerloss"), shim=shim, points=30 * SCALE, pragmas=[OFF], seed=3
    )
    assert report.lost_events > 0, report.summary()


def test_the_same_seed_crashes_the_same_way(tmp_path: Path, shim: Path) -> None:
    first, second = (
        powerloss.powerloss(str(tmp_path / name), shim=shim, points=15, durability="normal")
        for name in ("a", "b")
    )
    assert first.lost_events > 0
    for report in (first, second):
        report.seconds = 0.0
    assert first == second


def test_a_loss_is_counted_once_then_the_next_crash_is_judged_on_its_own(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite")
    with Store.open(path) as store:
        kept = store.append(crash_workload.USER, "i", "view", context={"txn": "t1", "n": 1})
    assert kept is not None
    acked = crash_workload.Acked()
    last = kept.seq + 3  # acknowledged, but never in the file: lost with the counter
    acked.record([("A", str(kept.seq), str(kept.seq), "t1"), ("A", str(last), str(last), "t2")])
    damage = crash_workload.inspect(path, "full", acked)
    assert damage.lost_events == 1
    assert [kind for kind, _ in damage.problems] == ["lost events"]

    acked.rebase(damage)
    assert acked.seqs == {kept.seq: "t1"}
    assert acked.record([("A", str(kept.seq + 1), str(kept.seq + 1), "t3")]) == []  # seq reusable
    assert acked.record([("A", str(kept.seq), str(kept.seq), "t4")]) != []  # but not a kept one

    missing = crash_workload.inspect(str(tmp_path / "gone.sqlite"), "full", acked)
    assert missing.integrity is None
    assert missing.lost_events == len(acked.seqs)
