"""Loaders on tiny hand-written files: every format, detection, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pocketrec.core.dataset import Interactions, InteractionsBuilder, LoadReport
from pocketrec.core.errors import DataFormatError
from pocketrec.core.events import EventType
from pocketrec.core.loaders import (
    detect_format,
    load,
    load_csv,
    load_pairs,
    load_recbole,
    load_sequences,
    rating_event,
    write_csv,
)

CLICK, LIKE, DISLIKE = int(EventType.CLICK), int(EventType.LIKE), int(EventType.DISLIKE)

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "7\t10\t5\t300\n"
    "8\t11\t3\t100\n"
    "7\t11\t1\t100\n"
    "7\t12\t3\t300\n"  # same time as line 2's event of user 7: line order breaks the tie
    "8\t10\t4\t50\n"
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "10\tToy Story\t1995\tAnimation Comedy\n"
    "11\tHeat\tunknown\tAction\n"
    "99\tNever Rated\t2000\tDrama\n"
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def items_of(data: Interactions, user: str) -> list[str]:
    return [data.items.id(i) for i in data.sequences[data.users.index(user)]]


def test_recbole_sorts_by_time_then_line_and_maps_ratings(tmp_path: Path) -> None:
    data, report = load_recbole(write(tmp_path / "x.inter", INTER))
    assert data.users.ids == ["7", "8"]  # first appearance in the file
    assert data.items.ids == ["11", "10", "12"]  # first appearance in the time-ordered sequences
    assert items_of(data, "7") == ["11", "10", "12"]
    assert items_of(data, "8") == ["10", "11"]
    assert data.events[0].tolist() == [DISLIKE, LIKE, CLICK]
    assert data.events[1].tolist() == [LIKE, CLICK]
    assert data.timestamps is not None
    assert data.timestamps[0].tolist() == [100.0, 300.0, 300.0]
    assert data.timestamps[0].dtype == np.float64
    assert (data.sequences[0].dtype, data.events[0].dtype) == (np.int32, np.int8)
    assert (report.lines_read, report.format, report.clean) == (5, "recbole", True)
    assert data.num_interactions == 5
    assert data.item_titles == {}


def test_rating_mapping_boundaries() -> None:
    assert [rating_event(r) for r in (1, 2, 2.5, 3, 3.5, 4, 5)] == [
        DISLIKE,
        DISLIKE,
        CLICK,
        CLICK,
        CLICK,
        LIKE,
        LIKE,
    ]


def test_recbole_reads_item_sibling(tmp_path: Path) -> None:
    write(tmp_path / "x.item", ITEM)
    data, report = load(write(tmp_path / "x.inter", INTER))
    toy, heat = data.items.index("10"), data.items.index("11")
    assert data.item_titles == {toy: "Toy Story", heat: "Heat"}
    assert data.item_meta[toy] == {"release_year": 1995, "genres": ["Animation", "Comedy"]}
    assert data.item_meta[heat] == {"genres": ["Action"]}  # no year when it is not a number
    assert data.title(data.items.index("12")) == "12"  # no title: falls back to the id
    assert "99" not in data.items  # metadata without interactions is left out, and noted
    assert any("1 items have metadata" in n for n in report.notes)


def test_sequences_format(tmp_path: Path) -> None:
    path = write(tmp_path / "seq.txt", "1 5 6 7\n\n2 6 5\n3 9\n")
    data, report = load_sequences(path)
    assert data.users.ids == ["1", "2", "3"]
    assert data.items.ids == ["5", "6", "7", "9"]  # strings, first appearance
    assert items_of(data, "2") == ["6", "5"]
    assert all((e == CLICK).all() for e in data.events)
    assert data.timestamps is None
    assert report.lines_read == 3


def test_pairs_format_keeps_each_users_line_order(tmp_path: Path) -> None:
    path = write(tmp_path / "pairs.txt", "1 5\n2 6\n1 6\r\n1 5\n")
    data, _ = load_pairs(path)
    assert items_of(data, "1") == ["5", "6", "5"]
    assert items_of(data, "2") == ["6"]


def test_csv_any_column_order_events_and_stable_time_sort(tmp_path: Path) -> None:
    text = (
        "item,event,timestamp,user\n"
        "a,click,20,u1\n"
        "b,purchase,10,u1\n"
        "c,DISMISS,20,u1\n"
        'd,like,5,"u,2"\n'
    )
    data, _ = load_csv(write(tmp_path / "e.csv", text))
    assert items_of(data, "u1") == ["b", "a", "c"]
    assert data.events[0].tolist() == [EventType.PURCHASE, EventType.CLICK, EventType.DISMISS]
    assert items_of(data, "u,2") == ["d"]


def test_csv_without_event_column_is_click(tmp_path: Path) -> None:
    data, _ = load(write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu,a,1\nu,b,2\n"))
    assert data.events[0].tolist() == [CLICK, CLICK]


def test_csv_unknown_event_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "user,item,timestamp,event\nu,a,1,click\nu,b,2,share\n")
    with pytest.raises(DataFormatError, match=r"e\.csv, line 3: unknown event type 'share'"):
        load(path)


def test_csv_missing_column_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"line 1: .*missing timestamp"):
        load(write(tmp_path / "e.csv", "user,item\nu,a\n"))


def test_write_csv_round_trip_without_timestamps_writes_positions(tmp_path: Path) -> None:
    data, _ = load_sequences(write(tmp_path / "s.txt", "1 5 6\n2 6\n"))
    write_csv(data, tmp_path / "s.csv")
    back, _ = load(tmp_path / "s.csv")
    assert back.timestamps is not None
    assert back.timestamps[0].tolist() == [0.0, 1.0]
    assert back.users == data.users
    assert back.items == data.items
    assert all(np.array_equal(a, b) for a, b in zip(back.sequences, data.sequences, strict=True))


def test_write_csv_quotes_awkward_ids_and_titles(tmp_path: Path) -> None:
    b = InteractionsBuilder()
    b.add('say "hi"', "a,b", int(EventType.PURCHASE), 1.5)
    b.add('say "hi"', "日本", int(EventType.DISMISS), 0.25)
    b.titles["a,b"] = 'Title, with "quotes"\nand a newline'
    data = b.build()
    write_csv(data, tmp_path / "w.csv")
    back, report = load(tmp_path / "w.csv")
    assert report.clean
    assert back == data
    assert back.items.ids == ["日本", "a,b"]  # time order decides first appearance in the file


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("a.inter", "user_id:token\titem_id:token\n1\t2\n", "recbole"),
        ("a.txt", "user_id:token\titem_id:token\n1\t2\n", "recbole"),
        ("a.csv", "user,item,timestamp\n1,2,3\n", "csv"),
        ("a.dat", "user,item,timestamp\n1,2,3\n", "csv"),
        ("a.txt", "1 2\n1 3\n\n2 3\n", "pairs"),
        ("a.txt", "1 2\n2 3 4\n3 1\n", "sequences"),
        ("a", "1 2 3\n", "sequences"),
    ],
)
def test_detect_format(tmp_path: Path, name: str, text: str, expected: str) -> None:
    assert detect_format(write(tmp_path / name, text)) == expected


@pytest.mark.parametrize("text", ["1\n2\n", "1,2,3\n4,5,6\n"])
def test_ambiguous_format_lists_the_formats(tmp_path: Path, text: str) -> None:
    with pytest.raises(DataFormatError, match=r"cannot tell the format.*recbole, sequences, pairs"):
        load(write(tmp_path / "x.txt", text))


def test_directory_with_one_data_file(tmp_path: Path) -> None:
    write(tmp_path / "ml.inter", INTER)
    write(tmp_path / "ml.item", ITEM)
    write(tmp_path / "README.txt", "about the data")
    data, report = load(tmp_path)
    assert report.format == "recbole"
    assert data.num_items == 3
    assert data.item_titles  # the .item sibling was read


def test_directory_with_several_or_no_data_files(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="found none"):
        load(tmp_path)
    write(tmp_path / "a.txt", "1 2\n")
    write(tmp_path / "b.csv", "user,item,timestamp\n1,2,3\n")
    with pytest.raises(DataFormatError, match=r"found a\.txt, b\.csv"):
        load(tmp_path)


@pytest.mark.parametrize("fmt", ["auto", "recbole", "sequences", "pairs", "csv"])
def test_empty_file_is_a_format_error(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path / "empty.txt", "\n  \n")
    with pytest.raises(DataFormatError, match=r"empty\.txt: empty file"):
        load(path, fmt)


def test_binary_file_is_a_format_error_with_line(tmp_path: Path) -> None:
    path = tmp_path / "bin.txt"
    path.write_bytes(b"1 2\n1 3\n\xff\xfe\x00\n")
    with pytest.raises(DataFormatError, match=r"bin\.txt, line 3: not UTF-8"):
        load(path, "pairs")
    with pytest.raises(DataFormatError, match="line 3: not UTF-8"):
        load(path)  # detection reads line by line


def test_unknown_format_name_and_missing_path() -> None:
    with pytest.raises(ValueError, match="unknown format 'avro'; expected one of auto, recbole"):
        load("whatever", "avro")
    with pytest.raises(FileNotFoundError, match="no such data file"):
        load("/nonexistent/data.txt")


def test_malformed_lines_are_counted_and_listed(tmp_path: Path) -> None:
    path = write(tmp_path / "p.txt", "1 2\n1 3 4\n2 5\n3\n2 6\n")
    data, report = load(path, "pairs")
    assert data.num_interactions == 3
    assert report.skipped == {"expected 2 fields 'user item'": 2}
    assert report.examples["expected 2 fields 'user item'"] == [2, 4]
    assert report.lines_read == 5
    assert "skipped 2 lines: expected 2 fields 'user item' (e.g. line 2, 4)" in report.summary()


def test_malformed_lines_raise_in_strict_mode(tmp_path: Path) -> None:
    path = write(tmp_path / "p.txt", "1 2\n1 3 4\n")
    with pytest.raises(
        DataFormatError, match=r"p\.txt, line 2: expected 2 fields 'user item': got 3"
    ):
        load(path, "pairs", strict=True)


@pytest.mark.parametrize(
    ("text", "reason", "line"),
    [
        (INTER.replace("\t300\n", "\tsoon\n", 1), "timestamp is not a number", 2),
        (INTER.replace("\t5\t", "\tfive\t", 1), "rating is not a number", 2),
        (INTER + "9\t13\t4\n", "expected 4 tab-separated fields", 7),
        (INTER + "\t13\t4\t1\n", "empty user or item id", 7),
    ],
)
def test_recbole_malformed_lines(tmp_path: Path, text: str, reason: str, line: int) -> None:
    path = write(tmp_path / "x.inter", text)
    data, report = load(path)
    assert report.skipped == {reason: 1}
    assert report.examples[reason] == [line]
    assert data.num_interactions == text.count("\n") - 2
    with pytest.raises(DataFormatError, match=f"line {line}: {reason}"):
        load(path, strict=True)


def test_recbole_without_header_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="line 1: expected a RecBole header"):
        load(write(tmp_path / "x.inter", "1\t2\t3\t4\n"))
    with pytest.raises(DataFormatError, match="no 'item_id' column"):
        load(write(tmp_path / "y.inter", "user_id:token\titem:token\n1\t2\n"))


def test_csv_malformed_lines_counted(tmp_path: Path) -> None:
    text = "user,item,timestamp\nu,a,1\nu,b\nu,c,later\n,d,3\nu,e,5\n"
    data, report = load(write(tmp_path / "e.csv", text))
    assert items_of(data, "u") == ["a", "e"]
    assert report.skipped == {
        "expected 3 comma-separated fields": 1,
        "timestamp is not a number": 1,
        "empty user or item id": 1,
    }


def test_only_bad_lines_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"no valid interactions .*2 lines skipped"):
        load(write(tmp_path / "p.txt", "1 2 3\n4 5 6\n"), "pairs")


def test_min_events_drops_and_counts_users(tmp_path: Path) -> None:
    path = write(tmp_path / "p.txt", "1 a\n2 b\n1 c\n3 d\n3 a\n1 e\n")
    data, report = load(path, min_events=2)
    assert data.users.ids == ["1", "3"]
    assert data.items.ids == ["a", "c", "e", "d"]  # 'b' only belonged to the dropped user
    assert (report.dropped_users, report.dropped_events, report.clean) == (1, 1, False)
    assert "dropped 1 users with < 2 events (1 events)" in report.summary()
    with pytest.raises(ValueError, match="min_events must be >= 1"):
        load(path, min_events=0)


def test_utf8_bom_and_unicode_ids(tmp_path: Path) -> None:
    path = tmp_path / "u.txt"
    path.write_bytes("\ufeffalice café naïve\nbob 日本\n".encode())
    data, _ = load(path)
    assert data.users.ids == ["alice", "bob"]
    assert data.items.ids == ["café", "naïve", "日本"]


def test_interactions_validates_its_parts() -> None:
    b = InteractionsBuilder()
    b.add("u", "a", CLICK, 1.0)
    data = b.build()
    with pytest.raises(ValueError, match="int32"):
        Interactions(data.users, data.items, [np.array([0])], data.events)
    with pytest.raises(ValueError, match=r"item indices must be in 0\.\.0"):
        Interactions(data.users, data.items, [np.array([1], dtype=np.int32)], data.events)
    with pytest.raises(ValueError, match="1 users but 0 sequences"):
        Interactions(data.users, data.items, [], [])
    with pytest.raises(ValueError, match="event codes"):
        Interactions(data.users, data.items, data.sequences, [np.array([9], dtype=np.int8)])
    b.add("u", "b", CLICK)  # no timestamp after one with a timestamp
    with pytest.raises(ValueError, match="timestamp for every interaction or for none"):
        b.build()


def test_summaries_mention_the_facts(tmp_path: Path) -> None:
    write(tmp_path / "x.item", ITEM)
    data, report = load(write(tmp_path / "x.inter", INTER))
    text = data.summary()
    assert "x.inter: 2 users, 3 items, 5 interactions" in text
    assert "events: click 2, like 2, dislike 1" in text  # by event code
    assert "time: 1970-01-01 .. 1970-01-01" in text
    assert "titles: 2 items" in text
    assert isinstance(report, LoadReport)
    assert report.summary().startswith(f"{tmp_path / 'x.inter'} (recbole): 5 lines read")
