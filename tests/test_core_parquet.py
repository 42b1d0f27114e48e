"""The ``parquet`` dataset format of ``pocketrec.core.loaders``: files and hive-partitioned
folders, column aliases and types, the arrival order, and bad input (typed errors naming the
file and row; nothing half-loaded)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pocketrec.core import DataFormatError, detect_format, load, synthetic, write_csv

pa = pytest.importorskip("pyarrow", reason="Parquet needs the `convert` extra")
pq = pytest.importorskip("pyarrow.parquet")


def write(
    path: Path, columns: dict[str, list[object]], types: dict[str, object] | None = None
) -> Path:
    """A Parquet file with ``columns`` (Arrow types inferred unless given in ``types``)."""
    types = types or {}
    table = pa.table(
        {name: pa.array(values, type=types.get(name)) for name, values in columns.items()}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def test_a_plain_file_loads_like_the_same_csv(tmp_path: Path) -> None:
    generated = synthetic.generate(num_users=60, num_items=30, seed=1)
    data = replace(generated, item_titles={}, item_meta={})  # titles are CSV-only columns
    csv = tmp_path / "events.csv"
    write_csv(data, csv)
    from_csv, _ = load(csv)
    rows = csv.read_text(encoding="utf-8").splitlines()[1:]
    fields = [row.split(",") for row in rows]
    columns: dict[str, list[object]] = {
        "user": [f[0] for f in fields],
        "item": [f[1] for f in fields],
        "timestamp": [float(f[2]) for f in fields],
        "event": [f[3] for f in fields],
    }
    parquet = write(tmp_path / "events.parquet", columns)
    assert detect_format(parquet) == "parquet"
    from_parquet, report = load(parquet)
    assert report.format == "parquet"
    assert report.lines_read == len(rows)
    assert from_parquet == from_csv


def test_hive_partitions_are_read_and_other_files_ignored(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write(root / "day=2024-05-02" / "part-0.parquet",
          {"user_id": ["a", "b"], "item_id": ["x", "y"], "ts": [20.0, 21.0]})  # fmt: skip
    write(root / "day=2024-05-01" / "part-0.parquet",
          {"user_id": ["a"], "item_id": ["z"], "ts": [10.0]})  # fmt: skip
    write(root / ".staging" / "junk.parquet", {"nothing": [1]})
    write(root / "_tmp" / "junk.parquet", {"nothing": [1]})
    (root / "_SUCCESS").write_text("")
    (root / "README.md").write_text("not data")
    assert detect_format(root) == "parquet"
    data, report = load(root)
    assert report.clean
    assert [data.users.id(u) for u in range(data.num_users)] == ["a", "b"]  # paths in order
    assert [data.items.id(i) for i in data.sequences[0].tolist()] == ["z", "x"]
    assert data.event_counts() == {"click": 3}  # no event column: click


def test_the_arrival_column_orders_rows_across_files(tmp_path: Path) -> None:
    root = tmp_path / "data"
    # arrival says: b's event came first, then a's two (equal times: arrival order kept)
    write(root / "day=1" / "p.parquet", {"user": ["a", "a"], "item": ["x", "y"],
          "timestamp": [5.0, 5.0], "arrival": [2, 1]})  # fmt: skip
    write(root / "day=0" / "p.parquet", {"user": ["b"], "item": ["w"], "timestamp": [9.0],
          "arrival": [0]})  # fmt: skip
    data, _ = load(root)
    assert [data.users.id(u) for u in range(data.num_users)] == ["b", "a"]
    a = data.users.get("a", -1)
    assert [data.items.id(i) for i in data.sequences[a].tolist()] == ["y", "x"]


def test_types_integer_ids_and_timestamp_columns(tmp_path: Path) -> None:
    when = [datetime(2024, 5, 1, 12, tzinfo=timezone.utc), datetime(2024, 5, 1, 13)]  # naive: UTC
    path = write(
        tmp_path / "t.parquet",
        {"user": [7, 7], "item": [100, 200], "time": when, "event_type": ["like", "dismiss"]},
        {"time": pa.timestamp("ms", tz="UTC")},
    )
    data, _ = load(path)
    assert data.users.id(0) == "7"
    assert [data.items.id(i) for i in data.sequences[0].tolist()] == ["100", "200"]
    assert data.timestamps is not None
    assert data.timestamps[0].tolist() == [when[0].timestamp(), when[0].timestamp() + 3600]
    assert data.event_counts() == {"like": 1, "dismiss": 1}
    dictionary = write(
        tmp_path / "d.parquet",
        {"user": ["u"], "item": ["i"], "timestamp": [1.0], "event": ["view"]},
        {"event": pa.dictionary(pa.int8(), pa.string())},
    )
    assert load(dictionary)[0].event_counts() == {"view": 1}


def test_bad_rows_are_skipped_and_counted_or_raise_when_strict(tmp_path: Path) -> None:
    path = write(
        tmp_path / "b.parquet",
        {
            "user": ["a", None, "a", " ", "a"],
            "item": ["x", "y", "z", "w", "v"],
            "timestamp": [1.0, 2.0, float("nan"), 4.0, None],
        },
    )
    data, report = load(path)
    assert data.num_interactions == 1
    assert report.skipped == {"empty user or item id": 2, "timestamp is missing or not finite": 2}
    assert report.examples["empty user or item id"] == [2, 4]
    with pytest.raises(DataFormatError, match=r"b\.parquet, line 2: empty user or item id"):
        load(path, strict=True)


def test_an_unknown_event_name_raises_naming_file_and_row(tmp_path: Path) -> None:
    path = write(tmp_path / "e.parquet",
                 {"user": ["a", "a"], "item": ["x", "y"], "timestamp": [1.0, 2.0],
                  "event": ["click", "swipe"]})  # fmt: skip
    with pytest.raises(DataFormatError, match=r"e\.parquet, line 2: .*'swipe'"):
        load(path)


@pytest.mark.parametrize(
    ("columns", "types", "problem"),
    [
        ({"user": ["a"], "timestamp": [1.0]}, {}, "missing item"),
        ({"user": [1.5], "item": ["x"], "timestamp": [1.0]}, {}, "'user' must hold strings or"),
        ({"user": ["a"], "item": ["x"], "timestamp": ["noon"]}, {}, "'timestamp' must hold num"),
        ({"user": ["a"], "item": ["x"], "timestamp": [1.0], "event": [1]}, {}, "event names"),
        (
            {"user": ["a"], "item": ["x"], "timestamp": [1.0], "arrival": [None]},
            {"arrival": pa.int64()},
            "'arrival' has nulls",
        ),
    ],
)
def test_wrong_columns_raise_naming_the_file(
    tmp_path: Path, columns: dict[str, list[object]], types: dict[str, object], problem: str
) -> None:
    path = write(tmp_path / "c.parquet", columns, types)
    with pytest.raises(DataFormatError, match=problem) as info:
        load(path)
    assert info.value.path == str(path)


def test_a_corrupt_file_raises_and_nothing_is_half_loaded(tmp_path: Path) -> None:
    root = tmp_path / "data"
    good = write(root / "day=1" / "a.parquet", {"user": ["a"], "item": ["x"], "timestamp": [1.0]})
    bad = root / "day=2" / "b.parquet"
    bad.parent.mkdir()
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # cut in half
    with pytest.raises(DataFormatError, match="not a readable Parquet file") as info:
        load(root)
    assert info.value.path == str(bad)
    bad.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    with pytest.raises(DataFormatError, match="not a readable Parquet file"):
        load(root)


def test_two_exports_in_one_folder_or_a_mix_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    row = {"user": ["a"], "item": ["x"], "timestamp": [1.0], "arrival": [0]}
    write(root / "day=1" / "a.parquet", row)
    write(root / "day=1" / "b.parquet", row)
    with pytest.raises(DataFormatError, match="repeats values"):
        load(root)
    (root / "day=1" / "b.parquet").unlink()
    write(root / "day=2" / "c.parquet", {"user": ["a"], "item": ["x"], "timestamp": [1.0]})
    with pytest.raises(DataFormatError, match="some files have an 'arrival' column"):
        load(root)


def test_a_file_without_suffix_is_detected_by_its_magic(tmp_path: Path) -> None:
    path = write(tmp_path / "events", {"user": ["a"], "item": ["x"], "timestamp": [1.0]})
    assert detect_format(path) == "parquet"
    assert load(path)[0].num_interactions == 1
    assert load(path, format="parquet")[0].num_interactions == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataFormatError, match=r"no valid interactions: no \.parquet files"):
        load(empty, format="parquet")
