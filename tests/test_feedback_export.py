"""``pocketrec export-feedback``: CSV and day-partitioned Parquet exports of a real server's
events, streamed in bounded memory, installed atomically, read back by ``pocketrec train``'s
loader, by DuckDB and by pyarrow datasets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import SERVER_BACKENDS, SyncHarness
from test_sync_server import event as sync_event

from pocketrec.cli import main
from pocketrec.core import DataFormatError, load
from pocketrec.runtime.sync.http import HttpClient
from pocketrec.server.export import export_feedback
from pocketrec.server.storage import StoredEvent
from pocketrec.server.storage_sqlite import SqliteFeedbackStorage
from pocketrec.server.validation import EventRecord

pa = pytest.importorskip("pyarrow", reason="the Parquet export needs the `server` extra")
pq = pytest.importorskip("pyarrow.parquet")
from pocketrec.server import export_parquet  # noqa: E402  (needs pyarrow)

DAY = 86_400.0
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAY_1 = 1_714_521_600.0  # 2024-05-01T00:00:00Z


def event(**fields: Any) -> dict[str, Any]:
    """An upload event (``test_sync_server.event``) on 2024-05-01 unless ``timestamp`` says."""
    return sync_event(**{"timestamp": MAY_1, **fields})


def post(client: HttpClient, events: list[dict[str, Any]]) -> None:
    reply = client.post_json("/v1/events", json.dumps({"events": events}).encode())
    assert reply.status == 200, reply.body


def utc_day(seconds: float) -> str:
    """The partition a time belongs to: the UTC date of it rounded to the microsecond."""
    micros = round(seconds * 1_000_000)
    return datetime.fromtimestamp(micros // 1_000_000, tz=timezone.utc).date().isoformat()


# Several days, a late upload of an early day, equal times, contexts (unicode inside), ids
# with commas, quotes and non-ASCII letters, every event type, and one time 0.3 µs before
# midnight that rounds to the next day's first microsecond.
PHONE = [
    event(user_id="alice", item_id="café ☕", event_type="view", timestamp=MAY_1 + 36_000.25,
          context={"screen": "home", "note": "😀 ünïcode"}),
    event(user_id="alice", item_id='i,"quoted"', event_type="click", timestamp=MAY_1 + 36_000.25,
          seq=2),
    event(user_id="ユーザー", item_id="café ☕", event_type="purchase",
          timestamp=MAY_1 + DAY - 0.3e-6, seq=None),
    event(user_id="alice", item_id="i00003", event_type="like", timestamp=MAY_1 + DAY + 5,
          seq=4, context={"position": 3}),
]  # fmt: skip
TABLET = [
    event(user_id="alice", item_id="i00003", event_type="dislike", timestamp=MAY_1 + 2 * DAY + 1),
    event(user_id="bob", item_id="i00004", event_type="dismiss", timestamp=MAY_1 + 2 * DAY + 2),
    event(user_id="bob", item_id="café ☕", event_type="click", timestamp=MAY_1 + 3 * DAY),
]
LATE = [  # the phone was offline: day 0 arrives last
    event(user_id="alice", item_id="i00009", event_type="click", timestamp=MAY_1 + 60, seq=9),
]


@pytest.fixture
def fed_server(sync_server: SyncHarness) -> SyncHarness:
    """The sync server after a phone and a tablet uploaded :data:`PHONE`, :data:`TABLET` and
    :data:`LATE` over HTTP, in that order."""
    phone = HttpClient(sync_server.url, sync_server.add_device("phone-ü"))
    tablet = HttpClient(sync_server.url, sync_server.add_device("tablet"))
    post(phone, PHONE)
    post(tablet, TABLET)
    post(phone, LATE)
    return sync_server


def leftovers(folder: Path) -> list[str]:
    """What ``folder`` holds besides the server (its folder and database files), sorted."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("server"))


def stored(db: Path) -> list[StoredEvent]:
    storage = SqliteFeedbackStorage(db)
    try:
        return list(storage.iter_events())
    finally:
        storage.close()


def export_both(db: Path, root: Path) -> tuple[Path, Path]:
    csv, parquet = root / "feedback.csv", root / "feedback"
    assert main(["export-feedback", "--db", str(db), "--out", str(csv)]) == 0
    args = ["export-feedback", "--db", str(db), "--out", str(parquet), "--format", "parquet"]
    assert main(args) == 0
    return csv, parquet


@pytest.mark.parametrize("server_backend", SERVER_BACKENDS)  # every --db kind
def test_csv_and_parquet_exports_load_to_identical_interactions(
    fed_server: SyncHarness, tmp_path: Path
) -> None:
    csv, parquet = export_both(fed_server.db, tmp_path)
    from_csv, csv_report = load(csv)
    from_parquet, parquet_report = load(parquet)  # auto-detected: a folder of partitions
    assert parquet_report.format == "parquet"
    assert csv_report.clean
    assert parquet_report.clean
    assert from_parquet == from_csv
    assert from_parquet.num_interactions == len(PHONE) + len(TABLET) + len(LATE)
    users = [from_parquet.users.id(u) for u in range(from_parquet.num_users)]
    assert users == ["phone-ü/alice", "phone-ü/ユーザー", "tablet/alice", "tablet/bob"]
    alice = users.index("phone-ü/alice")
    items = [from_parquet.items.id(i) for i in from_parquet.sequences[alice].tolist()]
    # by time; the late upload first; equal times keep arrival order
    assert items == ["i00009", "café ☕", 'i,"quoted"', "i00003"]
    assert from_parquet.timestamps is not None
    assert from_parquet.timestamps[alice].tolist() == [
        e["timestamp"] for e in (LATE[0], PHONE[0], PHONE[1], PHONE[3])
    ]


def test_parquet_export_has_the_documented_schema_partitions_and_rows(
    fed_server: SyncHarness, tmp_path: Path
) -> None:
    out = tmp_path / "feedback"
    assert main(["export-feedback", "--db", str(fed_server.db), "--out", str(out),
                 "--format", "parquet"]) == 0  # fmt: skip
    events = stored(fed_server.db)
    sent = {e["event_id"]: e for e in [*PHONE, *TABLET, *LATE]}
    schema = export_parquet.arrow_schema()
    assert [f.name for f in schema] == [name for name, _ in export_parquet.COLUMNS]
    assert [str(f.type) for f in schema] == [kind for _, kind in export_parquet.COLUMNS]
    assert pq.read_schema(out / "_common_metadata").equals(schema)
    marker = json.loads((out / export_parquet.MARKER).read_text(encoding="utf-8"))
    assert (marker["format"], marker["rows"]) == (export_parquet.FORMAT, len(events))

    rows: list[dict[str, Any]] = []
    for folder in sorted(out.glob("day=*")):
        for file in sorted(folder.glob("*.parquet")):
            table = pq.read_table(file, partitioning=None)
            assert table.schema.equals(schema), file
            for row in table.to_pylist():
                assert utc_day(row["timestamp"]) == folder.name.removeprefix("day=")
                rows.append(row)
    assert sorted(f.name for f in out.glob("day=*")) == [
        "day=2024-05-01", "day=2024-05-02", "day=2024-05-03", "day=2024-05-04"
    ]  # fmt: skip
    assert marker["files"] == sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet"))
    rows.sort(key=lambda r: r["arrival"])
    assert [r["arrival"] for r in rows] == list(range(len(events)))
    assert [r["event_id"] for r in rows] == [e.event_id for e in events]  # arrival order
    for row, stored_event in zip(rows, events, strict=True):
        original = sent[row["event_id"]]
        assert row["device_id"] == stored_event.device_id
        assert row["user"] == f"{row['device_id']}/{row['user_id']}"
        assert (row["user_id"], row["item_id"], row["event_type"], row["seq"]) == (
            original["user_id"], original["item_id"], original["event_type"], original["seq"]
        )  # fmt: skip
        assert row["timestamp"] == original["timestamp"]  # exact float seconds
        micros = round(original["timestamp"] * 1_000_000)
        assert row["event_time"] == EPOCH + timedelta(microseconds=micros)
        context = None if row["context"] is None else json.loads(row["context"])
        assert context == original["context"]
        assert abs(row["received_at"].timestamp() - stored_event.received_at) < 1e-5
    # the time 0.3 µs before midnight belongs to the next day, as its event_time says
    purchase = next(r for r in rows if r["event_type"] == "purchase")
    assert purchase["event_time"].isoformat() == "2024-05-02T00:00:00+00:00"
    assert (out / "day=2024-05-02").is_dir()


@pytest.mark.parametrize("server_backend", SERVER_BACKENDS)  # every --db kind
def test_duckdb_reads_the_export_as_a_feature_job_would(
    fed_server: SyncHarness, tmp_path: Path
) -> None:
    duckdb = pytest.importorskip("duckdb")
    _csv, out = export_both(fed_server.db, tmp_path)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    source = f"read_parquet('{out}/day=*/*.parquet', hive_partitioning = true)"
    described = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    sql_types = {
        "string": "VARCHAR",
        "double": "DOUBLE",
        "int64": "BIGINT",
        "timestamp[us, tz=UTC]": "TIMESTAMP WITH TIME ZONE",
    }
    expected = [(name, sql_types[kind]) for name, kind in export_parquet.COLUMNS]
    assert [(row[0], row[1]) for row in described] == [*expected, ("day", "DATE")]

    sent = [*PHONE, *TABLET, *LATE]
    assert con.execute(f"SELECT count(*), count(DISTINCT event_id) FROM {source}").fetchone() == (
        len(sent),
        len(sent),
    )
    per_day = con.execute(
        f"SELECT CAST(day AS VARCHAR), count(*) FROM {source} GROUP BY day ORDER BY day"
    ).fetchall()
    assert per_day == sorted(Counter(utc_day(e["timestamp"]) for e in sent).items())
    # the partition column agrees with the event time in SQL too
    assert con.execute(
        f"SELECT count(*) FROM {source} WHERE CAST(event_time AS DATE) <> day"
    ).fetchone() == (0,)
    per_user = con.execute(
        f'SELECT "user", count(*) FROM {source} GROUP BY "user" ORDER BY "user"'
    ).fetchall()
    assert per_user == [("phone-ü/alice", 4), ("phone-ü/ユーザー", 1), ("tablet/alice", 1),
                        ("tablet/bob", 2)]  # fmt: skip
    screens = con.execute(
        f"SELECT context ->> 'screen' FROM {source} WHERE context IS NOT NULL ORDER BY arrival"
    ).fetchall()
    assert screens == [("home",), (None,)]


def test_pyarrow_dataset_reads_the_export_with_its_partition_column(
    fed_server: SyncHarness, tmp_path: Path
) -> None:
    import pyarrow.dataset as ds

    _csv, out = export_both(fed_server.db, tmp_path)
    dataset = ds.dataset(out, format="parquet", partitioning="hive")
    assert dataset.schema.names == [*(name for name, _ in export_parquet.COLUMNS), "day"]
    assert dataset.count_rows() == len(PHONE) + len(TABLET) + len(LATE)
    day3 = dataset.to_table(filter=ds.field("day") == "2024-05-03")
    assert sorted(day3.column("event_type").to_pylist()) == ["dislike", "dismiss"]


def test_an_empty_server_gives_valid_empty_exports(
    sync_server: SyncHarness, tmp_path: Path
) -> None:
    duckdb = pytest.importorskip("duckdb")
    csv, out = export_both(sync_server.db, tmp_path)
    assert csv.read_text(encoding="utf-8") == "user,item,timestamp,event\n"
    assert pq.read_schema(out / "_common_metadata").equals(export_parquet.arrow_schema())
    assert json.loads((out / export_parquet.MARKER).read_text())["rows"] == 0
    assert not list(out.glob("day=*"))
    schema_only = f"read_parquet('{out}/_common_metadata')"  # a job can still plan its query
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM {schema_only}").fetchone() == (0,)
    described = con.execute(f"DESCRIBE SELECT * FROM {schema_only}").fetchall()
    assert [row[0] for row in described] == [name for name, _ in export_parquet.COLUMNS]
    for data in (csv, out):
        with pytest.raises(DataFormatError, match="no valid interactions"):
            load(data)


def test_a_rerun_replaces_the_export_and_leaves_nothing_beside_it(
    fed_server: SyncHarness, tmp_path: Path
) -> None:
    root = tmp_path / "exports"
    _csv, out = export_both(fed_server.db, root)
    first = json.loads((out / export_parquet.MARKER).read_text())["rows"]
    phone = HttpClient(fed_server.url, fed_server.add_device("phone-2"))
    post(phone, [event(timestamp=MAY_1 + 10 * DAY)])
    _csv, out = export_both(fed_server.db, root)
    assert json.loads((out / export_parquet.MARKER).read_text())["rows"] == first + 1
    assert (out / "day=2024-05-11").is_dir()
    assert sorted(p.name for p in root.iterdir()) == ["feedback", "feedback.csv"]


def test_refuses_to_replace_what_is_not_an_export(
    fed_server: SyncHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    db = str(fed_server.db)
    assert main(["export-feedback", "--db", db, "--out", str(precious), "--format", "parquet"]) == 2
    assert "not a pocketrec feedback export" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"
    assert main(["export-feedback", "--db", db, "--out", str(precious)]) == 2  # CSV onto a folder
    assert "is a folder" in capsys.readouterr().err
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(["export-feedback", "--db", db, "--out", str(a_file), "--format", "parquet"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert a_file.read_text() == "x"
    assert leftovers(tmp_path) == ["a_file", "precious"]


class FailingStorage(SqliteFeedbackStorage):
    """The real SQLite storage whose event stream breaks after ``fail_after`` events (a disk
    or database error in the middle of an export)."""

    fail_after = 4

    def iter_events(self) -> Any:
        for n, stored_event in enumerate(super().iter_events()):
            if n == self.fail_after:
                raise OSError("injected: the database went away")
            yield stored_event


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_failed_export_leaves_the_previous_one_whole(
    fed_server: SyncHarness, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / ("feedback.csv" if fmt == "csv" else "feedback")
    storage = SqliteFeedbackStorage(fed_server.db)
    try:
        rows = export_feedback(storage, out, format=fmt)
    finally:
        storage.close()
    before = load(out)[0]
    broken = FailingStorage(fed_server.db)
    try:
        with pytest.raises(OSError, match="injected"):
            export_feedback(broken, out, format=fmt)
    finally:
        broken.close()
    assert rows == len(PHONE) + len(TABLET) + len(LATE)
    assert load(out)[0] == before
    assert leftovers(tmp_path) == [out.name]


# --------------------------------------------------------------------------- at scale


def fill(db: Path, events: int, *, batch: int = 5_000) -> None:
    """``events`` synthetic events from 100 devices over 30 days, stored in batches through
    ``insert_events`` (the call the upload route makes)."""
    storage = SqliteFeedbackStorage(db)
    try:
        for start in range(0, events, batch):
            records = [
                EventRecord(
                    event_id=str(uuid.UUID(int=n + 1, version=4)),
                    seq=n + 1,
                    user_id=f"u{n % 3}",
                    item_id=f"i{(n * 7919) % 20_000:05d}",
                    event_type="click",
                    timestamp=MAY_1 + (n * 2_591_999.0 / events) + (n % 97) * 3_600.0,
                    context='{"screen":"home"}' if n % 3 == 0 else None,
                )
                for n in range(start, min(start + batch, events))
            ]
            storage.insert_events(f"phone-{start // batch % 100:03d}", records)
    finally:
        storage.close()


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A server database of :data:`BIG` events and one with none."""
    root = tmp_path_factory.mktemp("big")
    fill(root / "big.sqlite", BIG)
    SqliteFeedbackStorage(root / "empty.sqlite").close()
    return root / "big.sqlite", root / "empty.sqlite"


BIG = 250_000
"""Events in the memory test's database. Measured: an export that holds them all (the old
``fetchall``) peaks 144 MiB (CSV) and 160 MiB (Parquet) above an export of none; the streaming
exports 4 MiB and 21 MiB above it."""
GROWTH_BOUND_MIB = 80
"""Most extra peak memory an export of :data:`BIG` events may take over an export of none."""


PEAK_CHILD = """
import sys
from pocketrec.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status", encoding="ascii") as status:
    peak = next(line for line in status if line.startswith("VmHWM:"))
print("peak-kib", peak.split()[1])
sys.exit(code)
"""
"""``pocketrec <args>`` in a fresh interpreter that prints its peak resident memory (``VmHWM``:
the peak of this program alone; ``ru_maxrss`` of a child would also count the forked copy of the
test process before ``exec``)."""


def peak_rss_mib(db: Path, out: Path, fmt: str) -> float:
    """Peak resident memory (MiB) of ``pocketrec export-feedback`` run as a child process."""
    args = ["export-feedback", "--db", str(db), "--out", str(out), "--format", fmt]
    done = subprocess.run(
        [sys.executable, "-c", PEAK_CHILD, *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split("peak-kib")[1].split()[0]) / 1024


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmHWM from /proc")
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_memory_does_not_grow_with_the_number_of_events(
    big_server: tuple[Path, Path], tmp_path: Path, fmt: str
) -> None:
    big, empty = big_server
    baseline = peak_rss_mib(empty, tmp_path / "empty-export", fmt)
    peak = peak_rss_mib(big, tmp_path / "export", fmt)
    assert peak - baseline < GROWTH_BOUND_MIB, (
        f"{fmt} export of {BIG:,} events peaked at {peak:.0f} MiB, {peak - baseline:.0f} MiB "
        f"above an empty export's {baseline:.0f} MiB"
    )
    data, report = load(tmp_path / "export")
    assert report.clean
    assert data.num_interactions == BIG


def test_a_killed_export_leaves_the_previous_one_and_the_next_cleans_up(
    big_server: tuple[Path, Path], fed_server: SyncHarness, tmp_path: Path
) -> None:
    big, _empty = big_server
    out = tmp_path / "feedback"
    assert main(["export-feedback", "--db", str(fed_server.db), "--out", str(out),
                 "--format", "parquet"]) == 0  # fmt: skip
    before = load(out)[0]
    cmd = [sys.executable, "-m", "pocketrec", "export-feedback", "--db", str(big), "--out",
           str(out), "--format", "parquet"]  # fmt: skip
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = tmp_path / f".feedback.staging-{child.pid}"
    deadline = time.monotonic() + 120
    while not list(staging.glob("day=*")) and time.monotonic() < deadline:
        assert child.poll() is None, "the export finished before it could be killed"
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert staging.is_dir()  # killed halfway: its staging folder is left behind
    assert load(out)[0] == before  # readers still see the previous export, whole
    assert main(["export-feedback", "--db", str(fed_server.db), "--out", str(out),
                 "--format", "parquet"]) == 0  # fmt: skip
    assert not staging.exists()  # its process is gone: removed by the next export
    assert load(out)[0] == before


def test_any_interleaving_gives_full_row_groups_in_arrival_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiny limits force every path: days spilled early, spill files closed and reopened,
    row groups cut across spill files, a day split over several files."""
    fill(tmp_path / "s.sqlite", 3_000)  # 30+ days, interleaved in arrival order
    storage = SqliteFeedbackStorage(tmp_path / "s.sqlite")
    try:
        export_feedback(storage, tmp_path / "usual", format="parquet")
        for name, value in (("BATCH_ROWS", 7), ("SPILL_ROWS", 11), ("MAX_OPEN_FILES", 3),
                            ("ROW_GROUP_ROWS", 5), ("FILE_ROWS", 20)):  # fmt: skip
            monkeypatch.setattr(export_parquet, name, value)
        export_feedback(storage, tmp_path / "tiny", format="parquet")
    finally:
        storage.close()
    assert load(tmp_path / "tiny")[0] == load(tmp_path / "usual")[0]
    usual = {f.parent.name for f in (tmp_path / "usual").rglob("*.parquet")}
    assert len(usual) > 30
    assert len(list((tmp_path / "usual").rglob("*.parquet"))) == len(usual)  # one file a day
    for folder in sorted((tmp_path / "tiny").glob("day=*")):
        files = sorted(folder.glob("*.parquet"))
        assert [f.name for f in files] == [f"part-{k:05d}.parquet" for k in range(len(files))]
        arrivals: list[int] = []
        for file in files:
            meta = pq.read_metadata(file)
            groups = [meta.row_group(k).num_rows for k in range(meta.num_row_groups)]
            assert all(rows == 5 for rows in groups[:-1])
            assert 0 < groups[-1] <= 5
            assert sum(groups) <= 20
            if file != files[-1]:
                assert sum(groups) == 20
            arrivals += pq.read_table(file, columns=["arrival"]).column(0).to_pylist()
        assert arrivals == sorted(arrivals)  # each day's rows in arrival order
    assert not list((tmp_path / "tiny").glob(".spill*"))


def test_streaming_iteration_neither_blocks_intake_nor_sees_later_events(tmp_path: Path) -> None:
    fill(tmp_path / "s.sqlite", 5_000)
    storage = SqliteFeedbackStorage(tmp_path / "s.sqlite")
    try:
        events = storage.iter_events()
        first = next(events)
        later = EventRecord(str(uuid.uuid4()), 1, "u", "i", "click", MAY_1, None)
        assert storage.insert_events("phone-new", [later]) == 1  # not blocked by the reader
        rest = list(events)
        assert len(rest) + 1 == 5_000  # the snapshot the iteration started with
        assert first.event_id == str(uuid.UUID(int=1, version=4))
        assert storage.count_events() == 5_001
        assert [e.event_id for e in storage.iter_events()][-1] == later.event_id
    finally:
        storage.close()


def test_pyarrow_is_imported_only_by_what_needs_it() -> None:
    code = (
        "import sys\n"
        "import pocketrec.runtime, pocketrec.core, pocketrec.core.loaders\n"
        "import pocketrec.cli, pocketrec.server.export\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pyarrow', 'duckdb'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_pyarrow_parquet_fails_with_the_extra_to_install(
    fed_server: SyncHarness, tmp_path: Path
) -> None:
    parquet = tmp_path / "feedback"
    assert main(["export-feedback", "--db", str(fed_server.db), "--out", str(parquet),
                 "--format", "parquet"]) == 0  # fmt: skip
    code = (
        "import sys\n"
        "class NoPyarrow:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'pyarrow':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoPyarrow())\n"
        "from pocketrec.cli import main\n"
        "from pocketrec.core import load\n"
        "from pocketrec.core.errors import MissingDependencyError\n"
        "try:\n"
        "    load(sys.argv[3])\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
        "sys.exit(main(['export-feedback', '--db', sys.argv[1], '--out', sys.argv[2],\n"
        "               '--format', 'parquet']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(fed_server.db), str(tmp_path / "again"), str(parquet)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "reading Parquet needs pyarrow" in done.stdout
    assert "pip install 'pocketrec[convert]'" in done.stdout
    assert done.returncode == 2, done.stderr
    assert "the Parquet export needs pyarrow" in done.stderr
    assert "pip install 'pocketrec[server]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "again").exists()
    assert leftovers(tmp_path) == ["feedback"]
