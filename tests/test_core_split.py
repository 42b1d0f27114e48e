"""Leave-one-out split: targets, histories, negatives, dropped users."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketrec.core.dataset import Interactions, InteractionsBuilder
from pocketrec.core.events import EventType, negative_mask
from pocketrec.core.split import leave_one_out

V, C, L = int(EventType.VIEW), int(EventType.CLICK), int(EventType.LIKE)
D, X = int(EventType.DISLIKE), int(EventType.DISMISS)


def build(rows: dict[str, list[tuple[str, int]]]) -> Interactions:
    b = InteractionsBuilder()
    for user, events in rows.items():
        for item, event in events:
            b.add(user, item, event)
    return b.build()


def names(data: Interactions, items: np.ndarray) -> list[str]:
    return [data.items.id(int(i)) for i in items]


def test_click_only_last_is_test_second_to_last_is_valid() -> None:
    data = build({"u": [("a", C), ("b", C), ("c", C), ("d", C)], "short": [("a", C), ("b", C)]})
    split = leave_one_out(data)
    assert split.num_users == 1
    assert split.num_dropped == 1
    assert data.users.id(int(split.dropped_users[0])) == "short"
    assert names(data, split.train[0]) == ["a", "b"]
    assert names(data, split.valid_target) == ["c"]
    assert names(data, split.test_target) == ["d"]
    assert names(data, split.history(0, "test")[0]) == ["a", "b", "c"]
    assert "1 users kept, 1 dropped" in split.summary()


def test_negatives_stay_in_history_and_are_never_targets() -> None:
    data = build({"u": [("a", L), ("n1", D), ("b", V), ("c", C), ("n2", X), ("d", L), ("n3", D)]})
    split = leave_one_out(data)
    assert (data.items.id(split.target(0, "valid")), data.items.id(split.target(0, "test"))) == (
        "c",
        "d",
    )
    items, events = split.history(0, "valid")
    assert names(data, items) == ["a", "n1", "b"]
    assert events.tolist() == [L, D, V]
    assert names(data, split.history(0, "test")[0]) == ["a", "n1", "b", "c", "n2"]
    # the trailing dislike after the test target is not used anywhere
    assert split.test_pos[0] == 5


def test_users_with_too_few_positive_events_are_dropped() -> None:
    data = build({"u": [("a", D), ("b", C), ("c", D), ("d", C), ("e", X)], "w": [("a", C)] * 3})
    split = leave_one_out(data)
    assert [data.users.id(int(u)) for u in split.users] == ["w"]
    assert split.num_dropped == 1
    with pytest.raises(ValueError, match="min_events must be >= 3"):
        leave_one_out(data, min_events=2)
    assert leave_one_out(data, min_events=4).num_users == 0


def test_excluded_items_are_history_minus_target() -> None:
    data = build({"u": [("a", C), ("b", C), ("a", C), ("b", C), ("a", C)]})
    split = leave_one_out(data)
    assert split.target(0, "test") == data.items.index("a")
    assert names(data, split.excluded(0, "test")) == ["b"]  # 'a' is the target: never excluded
    assert names(data, split.excluded(0, "valid")) == ["a"]
    with pytest.raises(ValueError, match="unknown stage 'train'"):
        split.history(0, "train")  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 9), st.sampled_from([V, C, L, D, X])), max_size=12),
        min_size=1,
        max_size=8,
    )
)
def test_split_invariants(users: list[list[tuple[int, int]]]) -> None:
    rows = {f"u{k}": [(f"i{i}", e) for i, e in seq] for k, seq in enumerate(users) if seq}
    if not rows:
        return
    data = build(rows)
    split = leave_one_out(data)
    positives = [int((~negative_mask(e)).sum()) for e in data.events]
    assert split.num_users == sum(p >= 3 for p in positives)
    assert split.num_users + split.num_dropped == data.num_users
    for k in range(split.num_users):
        u = int(split.users[k])
        seq, ev = data.sequences[u], data.events[u]
        v, t = int(split.valid_pos[k]), int(split.test_pos[k])
        eligible = np.flatnonzero(~negative_mask(ev))
        assert (v, t) == (eligible[-2], eligible[-1])
        # no leakage: training is strictly before the validation target, which is before test
        assert len(split.train[k]) == v < t
        assert np.array_equal(split.train[k], seq[:v])
        assert np.array_equal(split.train_events[k], ev[:v])
        assert split.valid_target[k] == seq[v]
        assert split.test_target[k] == seq[t]
        assert (~negative_mask(split.train_events[k])).any()  # some positive training event
        for stage in ("valid", "test"):
            assert split.target(k, stage) not in split.excluded(k, stage)
