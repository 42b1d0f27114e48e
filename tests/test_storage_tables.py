"""User state, the catalog cache and the installed bundles."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pocketrec.storage import CatalogItem, CatalogUpdate, Store

# --- user state ------------------------------------------------------------------------------


def awkward_float32s(n: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Values that a lossy round trip would change: subnormals, -0.0, extremes, random bits."""
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    special = np.array(
        [-0.0, 1e-45, np.finfo(np.float32).max, np.finfo(np.float32).tiny, 0.1], dtype=np.float32
    )
    values = np.concatenate([special, bits[np.isfinite(bits)]])[:n]
    return values.astype(np.float32)


def test_state_round_trip_is_bit_exact_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    state = awkward_float32s(128)
    user_vector = awkward_float32s(65)[::-1].copy()
    with Store.open(path) as store:
        store.save_state("alice", state, model_version=7, event_count=42, user_vector=user_vector)
    with Store.open(path) as store:
        loaded = store.load_state("alice")
    assert loaded is not None
    assert loaded.state.dtype == np.float32
    assert loaded.state.shape == (128,)
    assert loaded.state.tobytes() == state.tobytes()
    assert loaded.user_vector is not None
    assert loaded.user_vector.tobytes() == user_vector.tobytes()
    assert (loaded.user_id, loaded.model_version, loaded.event_count) == ("alice", 7, 42)
    assert loaded.updated_at <= time.time()
    loaded.state[0] = 1.0  # a writable copy, not a view of the database


def test_save_state_replaces_and_user_vector_is_optional(store: Store) -> None:
    store.save_state("u", np.ones(4, np.float32), model_version=1, event_count=1)
    store.save_state("u", np.full(8, 2.0, np.float32), model_version=2, event_count=5)
    loaded = store.load_state("u")
    assert loaded is not None
    assert loaded.user_vector is None
    assert loaded.state.tolist() == [2.0] * 8
    assert (loaded.model_version, loaded.event_count) == (2, 5)


def test_big_endian_float32_is_stored_as_the_same_values(store: Store) -> None:
    values = np.array([1.5, -3.25, 1e-30], dtype=">f4")
    store.save_state("u", values, model_version=0, event_count=0)  # type: ignore[arg-type]
    loaded = store.load_state("u")
    assert loaded is not None
    assert loaded.state.tolist() == values.tolist()


@pytest.mark.parametrize(
    ("state", "kwargs", "message"),
    [
        (np.ones(3, np.float64), {}, "state_vector must have dtype float32, got float64"),
        (np.ones((2, 2), np.float32), {}, r"must be 1-D .* got shape \(2, 2\)"),
        (np.ones(0, np.float32), {}, "must be 1-D with 1..65536 elements"),
        (np.array([1.0, np.nan], np.float32), {}, "state_vector holds NaN or infinite"),
        ([1.0, 2.0], {}, "state_vector must be a numpy float32 array, got list"),
        (np.ones(3, np.float32), {"model_version": -1}, "model_version must be in 0"),
        (np.ones(3, np.float32), {"event_count": True}, "event_count must be an int"),
        (np.ones(3, np.float32), {"user_vector": np.ones(3, np.int32)}, "user_vector must have"),
    ],
)
def test_bad_state_is_rejected_and_the_old_one_kept(
    store: Store, state: Any, kwargs: dict[str, Any], message: str
) -> None:
    store.save_state("u", np.ones(2, np.float32), model_version=1, event_count=1)
    arguments: dict[str, Any] = {"model_version": 1, "event_count": 1}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        store.save_state("u", state, **arguments)
    loaded = store.load_state("u")
    assert loaded is not None
    assert loaded.state.tolist() == [1.0, 1.0]


def test_missing_and_deleted_state(store: Store) -> None:
    assert store.load_state("nobody") is None
    store.save_state("u", np.ones(2, np.float32), model_version=1, event_count=1)
    assert store.delete_state("u") is True
    assert store.delete_state("u") is False
    assert store.load_state("u") is None
    with pytest.raises(ValueError, match="user_id must be a string"):
        store.load_state(3)  # type: ignore[arg-type]


# --- catalog ---------------------------------------------------------------------------------


def test_catalog_update_and_read_back(store: Store) -> None:
    before = time.time()
    result = store.update_catalog(
        [
            CatalogItem("a", "Alpha", {"genre": "drama", "tags": ["x", "y"]}),
            CatalogItem("b", None, None, available=False, updated_at=1_600_000_000.0),
        ]
    )
    assert result == CatalogUpdate(upserted=2, removed=0)
    a = store.get_item("a")
    assert a is not None
    assert (a.title, a.metadata, a.available) == (
        "Alpha",
        {"genre": "drama", "tags": ["x", "y"]},
        True,
    )
    assert a.updated_at is not None
    assert before <= a.updated_at <= time.time()
    assert store.get_item("b") == CatalogItem("b", None, None, False, 1_600_000_000.0)
    assert store.get_item("zzz") is None
    assert (store.catalog_size(), store.catalog_size(available_only=True)) == (2, 1)


def test_upsert_remove_and_replace(store: Store) -> None:
    store.update_catalog([CatalogItem(x) for x in "abcd"])
    result = store.update_catalog([CatalogItem("a", "new title")], remove=["b", "nope"])
    assert result == CatalogUpdate(upserted=1, removed=1)
    a = store.get_item("a")
    assert a is not None
    assert a.title == "new title"
    assert store.catalog_size() == 3
    replaced = store.update_catalog([CatalogItem("c"), CatalogItem("e")], replace=True)
    assert replaced == CatalogUpdate(upserted=2, removed=2)  # a and d went, c stayed, e is new
    assert [store.get_item(x) is not None for x in "abcde"] == [False, False, True, False, True]
    assert store.update_catalog(replace=True) == CatalogUpdate(upserted=0, removed=2)
    assert store.catalog_size() == 0


def test_availability_mask_follows_the_given_order(store: Store) -> None:
    store.update_catalog([CatalogItem("a"), CatalogItem("b", available=False), CatalogItem("c")])
    mask = store.availability_mask(["c", "unknown", "b", "a", "c"])
    assert mask.dtype == np.bool_
    assert mask.shape == (5,)
    assert mask.tolist() == [True, False, False, True, True]
    assert store.availability_mask([]).shape == (0,)
    assert store.availability_mask(np.array(["a", "b"])).tolist() == [True, False]
    with pytest.raises(ValueError, match=r"item_ids\[1\] must be a str, got int"):
        store.availability_mask(["a", 1])  # type: ignore[list-item]


def test_availability_mask_of_a_large_catalog(store: Store) -> None:
    rng = np.random.default_rng(3)
    ids = [f"item-{n}" for n in range(20_000)]
    available = rng.random(len(ids)) < 0.7
    store.update_catalog(
        [CatalogItem(item, available=bool(flag)) for item, flag in zip(ids, available, strict=True)]
    )
    order = rng.permutation(len(ids))
    query = [ids[i] for i in order] + ["missing"]
    expected = np.append(available[order], False)
    np.testing.assert_array_equal(store.availability_mask(query), expected)


def test_set_available_keeps_title_and_metadata(store: Store) -> None:
    store.update_catalog([CatalogItem("a", title="A", metadata={"x": 1}), CatalogItem("b")])
    assert store.unavailable_items() == []
    store.set_available(["a", "new"], False)  # an uncached item is cached, unavailable
    assert store.unavailable_items() == ["a", "new"]
    item = store.get_item("a")
    assert item is not None
    assert (item.title, item.metadata, item.available) == (
        "A",
        {"x": 1},
        False,
    )
    new = store.get_item("new")
    assert new is not None
    assert (new.title, new.metadata) == (None, None)
    store.set_available(["a", "new", "other"], True)  # an uncached item stays uncached
    assert store.unavailable_items() == []
    assert store.get_item("other") is None
    assert store.catalog_size() == 3
    for bad in (["x" * 600], [3], "ab"):
        with pytest.raises(ValueError, match="item_ids"):
            store.set_available(bad, False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="available must be a bool"):
        store.set_available(["a"], 1)  # type: ignore[arg-type]
    assert store.unavailable_items() == []


@pytest.mark.parametrize(
    ("items", "remove", "message"),
    [
        ([CatalogItem("a"), CatalogItem("a")], [], r"items\[1\]\.item_id 'a' appears twice"),
        ([CatalogItem("a")], ["a"], "item 'a' is both updated and removed"),
        ([CatalogItem("a"), "b"], [], r"items\[1\] must be a CatalogItem"),
        ([CatalogItem("a", available=1)], [], r"items\[0\]\.available must be a bool"),  # type: ignore[arg-type]
        ([CatalogItem("a", title="t" * 5000)], [], r"items\[0\]\.title is 5000 bytes"),
        ([CatalogItem("a", metadata={"x": float("inf")})], [], "non-finite"),
        ([CatalogItem("a", updated_at=-5.0)], [], r"items\[0\]\.updated_at must be seconds"),
        ([], [7], r"remove\[0\] must be a str"),
        ("abc", [], "items must be an iterable"),
    ],
)
def test_bad_catalog_updates_change_nothing(
    store: Store, items: Any, remove: Any, message: str
) -> None:
    store.update_catalog([CatalogItem("a", "kept"), CatalogItem("z")])
    with pytest.raises(ValueError, match=message):
        store.update_catalog(items, remove=remove)
    a = store.get_item("a")
    assert a is not None
    assert a.title == "kept"
    assert store.catalog_size() == 2


def test_replace_and_remove_together_is_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="remove must be empty when replace=True"):
        store.update_catalog([CatalogItem("a")], remove=["b"], replace=True)
    with pytest.raises(ValueError, match="replace must be a bool"):
        store.update_catalog([], replace="yes")  # type: ignore[arg-type]


# --- bundles ---------------------------------------------------------------------------------

SHA_A = "a" * 64
SHA_B = "0123456789abcdef" * 4


def test_bundles_install_and_switch_the_active_one(store: Store, tmp_path: Path) -> None:
    assert store.active_bundle() is None
    assert store.installed_bundles() == []
    first = store.add_bundle(1, tmp_path / "b1", SHA_A.upper(), activate=True)
    assert (first.model_version, first.path, first.sha256, first.active) == (
        1,
        str(tmp_path / "b1"),
        SHA_A,
        True,
    )
    second = store.add_bundle(2, "/bundles/2", SHA_B)
    assert not second.active
    assert store.active_bundle() == first
    switched = store.activate_bundle(2)
    assert switched.active
    assert store.active_bundle() == switched
    assert [b.active for b in store.installed_bundles()] == [False, True]
    store.activate_bundle(1)  # rolling back to an older version is allowed
    active = store.active_bundle()
    assert active is not None
    assert active.model_version == 1


def test_adding_a_bundle_again(store: Store) -> None:
    record = store.add_bundle(3, "/b/3", SHA_A)
    assert store.add_bundle(3, "/b/3", SHA_A) == record  # same content: a no-op
    with pytest.raises(ValueError, match="model_version 3 is already installed from '/b/3'"):
        store.add_bundle(3, "/b/3-new", SHA_A)
    with pytest.raises(ValueError, match="already installed"):
        store.add_bundle(3, "/b/3", SHA_B)
    assert store.installed_bundles() == [record]


def test_activate_and_remove_rules(store: Store) -> None:
    store.add_bundle(1, "/b/1", SHA_A, activate=True)
    store.add_bundle(2, "/b/2", SHA_B)
    with pytest.raises(ValueError, match=r"model_version 9 is not installed \(installed: 1, 2\)"):
        store.activate_bundle(9)
    with pytest.raises(ValueError, match="model_version 1 is the active bundle"):
        store.remove_bundle(1)
    assert store.remove_bundle(2) is True
    assert store.remove_bundle(2) is False
    assert [b.model_version for b in store.installed_bundles()] == [1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, "/p", SHA_A), "model_version must be in 0"),
        (("1", "/p", SHA_A), "model_version must be an int"),
        ((1, "", SHA_A), "path must not be empty"),
        ((1, 5, SHA_A), "path must be a str"),
        ((1, "/p", "xyz"), "sha256 must be 64 hexadecimal digits"),
        ((1, "/p", "g" * 64), "sha256 must be 64 hexadecimal digits"),
    ],
)
def test_bad_bundle_records_are_rejected(store: Store, args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        store.add_bundle(*args)
    assert store.installed_bundles() == []


def test_the_file_itself_allows_at_most_one_active_bundle(store: Store) -> None:
    store.add_bundle(1, "/b/1", SHA_A, activate=True)
    store.add_bundle(2, "/b/2", SHA_B)
    conn = sqlite3.connect(store.path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            conn.execute("UPDATE bundles SET active = 1 WHERE model_version = 2")
    finally:
        conn.close()
