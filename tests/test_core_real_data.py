"""The three shared datasets load with the README's counts and split under the protocol."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pocketrec.core.dataset import Interactions, LoadReport
from pocketrec.core.events import EventType
from pocketrec.core.loaders import load, write_csv
from pocketrec.core.split import leave_one_out

# folder -> (format auto-detection must find, users, items, interactions), from the README table
EXPECTED = {
    "ml-100k": ("recbole", 943, 1682, 100_000),
    "amazon-beauty": ("sequences", 22_363, 12_101, 198_502),
    "amazon-video": ("pairs", 31_013, 23_715, 287_107),
}


Loaded = tuple[Interactions, LoadReport]


@pytest.fixture(scope="module")
def dataset(shared_data: Path) -> Callable[[str], Loaded]:
    """``dataset(name)``: that folder loaded once (auto-detected)."""
    cache: dict[str, Loaded] = {}

    def get(name: str) -> Loaded:
        if name not in cache:
            cache[name] = load(shared_data / name)
        return cache[name]

    return get


ALL = pytest.mark.parametrize("name", sorted(EXPECTED))
AMAZON = pytest.mark.parametrize("name", ["amazon-beauty", "amazon-video"])


@ALL
def test_counts_match_the_readme(dataset: Callable[[str], Loaded], name: str) -> None:
    data, report = dataset(name)
    fmt, users, items, interactions = EXPECTED[name]
    assert report.format == fmt
    assert (data.num_users, data.num_items, data.num_interactions) == (users, items, interactions)
    assert report.clean, report.summary()


@ALL
def test_sequences_are_well_formed(dataset: Callable[[str], Loaded], name: str) -> None:
    data = dataset(name)[0]
    lengths = np.array([len(s) for s in data.sequences])
    assert lengths.min() >= 1
    assert all(len(e) == len(s) for e, s in zip(data.events, data.sequences, strict=True))
    if data.timestamps is not None:
        assert all((np.diff(t) >= 0).all() for t in data.timestamps)


@AMAZON
def test_amazon_ids_stay_numeric_strings(dataset: Callable[[str], Loaded], name: str) -> None:
    data = dataset(name)[0]
    assert data.timestamps is None
    assert data.users.id(0) == "1"
    assert all(i.isdigit() and not i.startswith("0") for i in data.items.ids)


def test_ml100k_events_and_metadata(dataset: Callable[[str], Loaded]) -> None:
    data = dataset("ml-100k")[0]
    # README: ratings 1..5; <= 2 dislike, 3 click, >= 4 like (counts from the file)
    assert data.event_counts() == {"click": 27_145, "like": 55_375, "dislike": 17_480}
    toy = data.items.index("1")
    assert data.item_titles[toy] == "Toy Story"
    assert data.item_meta[toy] == {
        "release_year": 1995,
        "genres": ["Animation", "Children's", "Comedy"],
    }
    assert len(data.item_titles) == 1682
    assert data.title(data.items.index("267")) == "unkonwn"  # as in the file
    assert "release_year" not in data.item_meta[data.items.index("267")]


@ALL
def test_leave_one_out_on_real_data(dataset: Callable[[str], Loaded], name: str) -> None:
    data = dataset(name)[0]
    split = leave_one_out(data)
    assert split.num_users + split.num_dropped == data.num_users
    if name == "amazon-beauty":  # 5-core: nobody is dropped
        assert split.num_dropped == 0
    for k in range(0, split.num_users, max(1, split.num_users // 50)):
        u = int(split.users[k])
        events = data.events[u]
        assert events[split.test_pos[k]] not in (EventType.DISLIKE, EventType.DISMISS)
        assert split.valid_pos[k] < split.test_pos[k] <= len(events) - 1
        assert len(split.history(k, "valid")[0]) == split.valid_pos[k]


def test_ml100k_csv_round_trip(dataset: Callable[[str], Loaded], tmp_path: Path) -> None:
    """Lines of users interleaved in the file: indices do not depend on that interleaving."""
    data = dataset("ml-100k")[0]
    write_csv(data, tmp_path / "ml.csv")
    back, report = load(tmp_path / "ml.csv")
    assert report.clean
    genres_only = {i: {"genres": m["genres"]} for i, m in data.item_meta.items()}
    assert back == replace(data, item_meta=genres_only)  # release years are not in the CSV
