"""Event registry and IdMap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketrec.core.errors import DataFormatError
from pocketrec.core.events import (
    EVENT_NAMES,
    NEGATIVE_EVENTS,
    EventType,
    event_code,
    event_name,
    is_negative,
    negative_mask,
)
from pocketrec.core.idmap import IdMap, UnknownIdError


def test_event_codes_are_the_documented_bundle_codes() -> None:
    assert EVENT_NAMES == ("view", "click", "purchase", "like", "dislike", "dismiss")
    assert [event_code(n) for n in EVENT_NAMES] == [0, 1, 2, 3, 4, 5]
    assert event_code(" Purchase ") == EventType.PURCHASE == 2
    assert event_name(4) == "dislike"


def test_negative_events_are_dislike_and_dismiss() -> None:
    assert {e.name.lower() for e in NEGATIVE_EVENTS} == {"dislike", "dismiss"}
    assert [is_negative(c) for c in range(6)] == [False] * 4 + [True] * 2
    codes = np.array([[0, 4], [5, 3]], dtype=np.int8)
    assert negative_mask(codes).tolist() == [[False, True], [True, False]]


def test_unknown_event_names_the_value_and_the_choices() -> None:
    with pytest.raises(
        ValueError, match=r"unknown event type 'share'; expected one of view, click"
    ):
        event_code("share")
    with pytest.raises(ValueError, match="unknown event code 9"):
        event_name(9)


def test_idmap_assigns_insertion_order_and_looks_up_both_ways() -> None:
    m = IdMap(["b", "a"])
    assert m.add("c") == 2
    assert m.add("a") == 1  # existing ids keep their index
    assert (m.index("c"), m.id(0), len(m), m.ids) == (2, "b", 3, ["b", "a", "c"])
    assert "a" in m
    assert "z" not in m
    assert m.get("z", -1) == -1
    assert m.get("b", -1) == 0


def test_idmap_errors_name_the_id() -> None:
    m = IdMap(["x"])
    with pytest.raises(KeyError, match="unknown id 'nope'") as err:
        m.index("nope")
    assert isinstance(err.value, UnknownIdError)
    with pytest.raises(UnknownIdError, match="index 5 out of range"):
        m.id(5)
    with pytest.raises(UnknownIdError, match="index -1"):
        m.id(-1)
    with pytest.raises(ValueError, match="duplicate id 'x'"):
        IdMap(["x", "y", "x"])
    with pytest.raises(TypeError, match="ids must be str"):
        m.add(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("ids", [[], [""], [" ", "  "], ["a b", "\t", "é", "日本", "😀", "\n"]])
def test_idmap_json_round_trip_edge_cases(tmp_path: Path, ids: list[str]) -> None:
    path = tmp_path / "ids.json"
    IdMap(ids).save(path)
    assert IdMap.load(path).ids == ids
    assert json.loads(path.read_text(encoding="utf-8")) == ids


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.text(alphabet=st.characters()), unique=True, max_size=30))
def test_idmap_json_round_trip_any_unicode(
    tmp_path_factory: pytest.TempPathFactory, ids: list[str]
) -> None:
    # st.characters() includes lone surrogates: the file must still round-trip exactly
    path = tmp_path_factory.mktemp("ids") / "ids.json"
    IdMap(ids).save(path)
    loaded = IdMap.load(path)
    assert loaded.ids == ids
    assert loaded == IdMap(ids)
    assert all(loaded.index(i) == k for k, i in enumerate(ids))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('["a", "b", "a"]', "duplicate id 'a'"),
        ('{"a": 0}', "expected a JSON list of strings, got dict"),
        ('["a", 3]', "entry 1 is 3, not a string"),
        ("not json", "not a JSON id list"),
    ],
)
def test_idmap_load_rejects_bad_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "ids.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError, match=message) as err:
        IdMap.load(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)
