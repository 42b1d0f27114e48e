"""Full-ranking metrics: hand-computed values, properties, accumulator = batch."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketrec.core.dataset import InteractionsBuilder
from pocketrec.core.events import EventType
from pocketrec.core.metrics import (
    MetricAccumulator,
    evaluate,
    evaluate_ranks,
    popularity_baseline,
    rank_of_target,
    topk_items,
    training_popularity,
)
from pocketrec.core.split import Split, leave_one_out


def test_rank_counts_items_above_among_non_excluded() -> None:
    scores = np.array([0.9, 0.1, 0.5, 0.7, 0.3], dtype=np.float32)
    assert rank_of_target(scores, 0) == 0
    assert rank_of_target(scores, 2) == 2
    assert rank_of_target(scores, 2, exclude=[0, 0, 4]) == 1  # duplicates are fine
    assert rank_of_target(scores, 1, exclude=np.array([3, 2])) == 2


def test_ties_are_pessimistic() -> None:
    scores = np.array([1.0, 2.0, 2.0, 2.0, 0.0], dtype=np.float32)
    assert rank_of_target(scores, 1) == 2
    assert rank_of_target(scores, 3) == 2
    assert rank_of_target(np.zeros(10, dtype=np.float32), 0) == 9  # constant scorer: worst rank


def test_rank_rejects_bad_input() -> None:
    scores = np.array([1.0, np.nan], dtype=np.float32)
    with pytest.raises(ValueError, match="NaN"):
        rank_of_target(scores, 0)
    with pytest.raises(ValueError, match="target 1 is in the excluded items"):
        rank_of_target(np.ones(3), 1, exclude=[1])
    with pytest.raises(ValueError, match="out of range"):
        rank_of_target(np.ones(3), 3)
    with pytest.raises(ValueError, match="excluded indices"):
        rank_of_target(np.ones(3), 0, exclude=[7])


def test_topk_best_first_ties_by_lower_index_and_excludes() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1, 0.5], dtype=np.float32)
    assert topk_items(scores, 3).tolist() == [1, 3, 0]
    assert topk_items(scores, 4, exclude=[1, 0]).tolist() == [3, 2, 5, 4]
    assert topk_items(scores, 10, exclude=[1]).tolist() == [3, 0, 2, 5, 4]
    assert topk_items(np.array([3, 1, 2]), 2).tolist() == [0, 2]  # integer scores
    assert topk_items(np.array([1, 3, 2], dtype=np.uint8), 1).tolist() == [1]


def test_hand_computed_values() -> None:
    m = evaluate_ranks([0], [[7]], num_items=10, ks=(1, 5))
    assert m["hr@1"] == m["ndcg@1"] == m["ndcg@5"] == m["mrr"] == 1.0
    m = evaluate_ranks([3], [[1, 2, 3, 7, 8]], num_items=10, ks=(1, 5))
    assert m["hr@1"] == m["ndcg@1"] == 0.0
    assert m["hr@5"] == m["recall@5"] == 1.0
    assert m["ndcg@5"] == pytest.approx(1.0 / math.log2(5))
    assert m["precision@5"] == pytest.approx(0.2)
    assert m["mrr"] == pytest.approx(0.25)
    assert m["coverage@1"] == pytest.approx(0.1)
    assert m["coverage@5"] == pytest.approx(0.5)


def test_default_keys_and_two_users() -> None:
    m = evaluate_ranks([0, 30], [list(range(20)), list(range(10, 30))], num_items=40)
    families = ("hr", "ndcg", "precision", "recall", "coverage")
    expected = {f"{name}@{k}" for name in families for k in (5, 10, 20)} | {"mrr"}
    assert set(m) == expected
    assert m["hr@10"] == 0.5
    assert m["precision@10"] == pytest.approx(0.05)
    assert m["coverage@5"] == pytest.approx(10 / 40)  # {0..4} and {10..14}
    assert m["coverage@20"] == pytest.approx(30 / 40)
    assert m["mrr"] == pytest.approx((1 + 1 / 31) / 2)


def test_bad_batches_are_rejected() -> None:
    with pytest.raises(ValueError, match="2 ranks but 1 top-K lists"):
        evaluate_ranks([0, 1], [[0]], num_items=3)
    with pytest.raises(ValueError, match="no users"):
        MetricAccumulator(3).result()
    with pytest.raises(ValueError, match=r"top-K items must be in 0\.\.2"):
        MetricAccumulator(3).add(0, [5])
    with pytest.raises(ValueError, match="cut-offs"):
        MetricAccumulator(3, ks=(0,))


users = st.lists(
    st.tuples(st.integers(0, 60), st.lists(st.integers(0, 49), min_size=20, max_size=20)),
    min_size=1,
    max_size=30,
)


@settings(max_examples=80, deadline=None)
@given(users)
def test_metric_properties_and_accumulator_equals_batch(
    rows: list[tuple[int, list[int]]],
) -> None:
    ks = (1, 5, 10, 20)
    ranks = [r for r, _ in rows]
    tops = [t for _, t in rows]
    batch = evaluate_ranks(ranks, tops, num_items=50, ks=ks)
    acc = MetricAccumulator(50, ks)
    for rank, top in rows:
        acc.add(rank, top)
    assert acc.result() == batch  # identical, not just close
    assert len(acc) == len(rows)
    assert all(0.0 <= v <= 1.0 for v in batch.values())
    for small, large in itertools.pairwise(ks):
        assert batch[f"hr@{small}"] <= batch[f"hr@{large}"]
        assert batch[f"ndcg@{small}"] <= batch[f"ndcg@{large}"]
        assert batch[f"coverage@{small}"] <= batch[f"coverage@{large}"]
    for k in ks:
        assert batch[f"ndcg@{k}"] <= batch[f"hr@{k}"]
        assert batch[f"recall@{k}"] == batch[f"hr@{k}"]
        assert batch[f"precision@{k}"] == pytest.approx(batch[f"hr@{k}"] / k)
    assert batch["hr@1"] <= batch["mrr"] <= 1.0
    assert batch["hr@1"] == pytest.approx(batch["ndcg@1"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 5), min_size=2, max_size=40).flatmap(
        lambda s: st.tuples(
            st.just(s), st.integers(0, len(s) - 1), st.sets(st.integers(0, len(s) - 1))
        )
    )
)
def test_rank_agrees_with_sorting(case: tuple[list[int], int, set[int]]) -> None:
    raw, target, exclude = case
    exclude.discard(target)
    scores = np.array(raw, dtype=np.float32)
    rank = rank_of_target(scores, target, sorted(exclude))
    others = [s for i, s in enumerate(raw) if i != target and i not in exclude]
    assert rank == sum(s >= raw[target] for s in others)
    top = topk_items(scores, len(raw), sorted(exclude)).tolist()
    assert sorted(top) == sorted(set(range(len(raw))) - exclude)
    assert [raw[i] for i in top] == sorted((raw[i] for i in top), reverse=True)
    # with distinct-from-target scores above, the target sits at its rank in the full top list
    assert top.index(target) <= rank


def _tiny_split() -> Split:
    b = InteractionsBuilder()
    click = int(EventType.CLICK)
    for user, items in {"u1": "abcab", "u2": "bcabc", "u3": "cabca", "u4": "ddbda"}.items():
        for item in items:
            b.add(user, item, click)
    return leave_one_out(b.build())


def test_evaluate_replays_users_like_the_batch_function() -> None:
    split = _tiny_split()
    rng = np.random.default_rng(0)
    table = rng.random((split.data.num_users, split.data.num_items)).astype(np.float32)
    result = evaluate(split, lambda u, _i, _e: table[u], "test", ks=(1, 2))
    ranks, tops = [], []
    for k in range(split.num_users):
        scores = table[split.users[k]]
        exclude = split.excluded(k, "test")
        ranks.append(rank_of_target(scores, split.target(k, "test"), exclude))
        tops.append(topk_items(scores, 2, exclude))
    assert result == evaluate_ranks(ranks, tops, split.data.num_items, ks=(1, 2))


def test_popularity_baseline_counts_training_positives_only() -> None:
    split = _tiny_split()
    items = split.data.items
    pop = training_popularity(split)
    # training parts: abc, bca, cab, ddb
    assert {items.id(i): int(c) for i, c in enumerate(pop)} == {"a": 3, "b": 4, "c": 3, "d": 2}
    m = popularity_baseline(split, "test", ks=(1, 4))
    assert m["hr@4"] == 1.0  # the whole catalog
    # test targets b, c, a, a; users 1-3 only have 'd' (2) left to compete with;
    # user 4 (history d, b) has a tie a = c = 3, pessimistic: ranks 0, 0, 0, 1 -> hr@1 = 3/4
    assert m["hr@1"] == pytest.approx(0.75)
