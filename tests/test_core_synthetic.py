"""Synthetic generator: determinism, CSV round-trip, heavy tail, learnability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from pocketrec.core.dataset import Interactions
from pocketrec.core.events import EVENT_NAMES, negative_mask
from pocketrec.core.loaders import load
from pocketrec.core.metrics import Scorer, evaluate, popularity_baseline, training_popularity
from pocketrec.core.split import Split, leave_one_out
from pocketrec.core.synthetic import NEW_SUFFIX, SERIES_LENGTH, generate, item_name, write_csv


@pytest.fixture(scope="module")
def data() -> Interactions:
    return generate(num_users=600, num_items=300, seed=7)


def test_same_seed_same_data_other_seed_other_data(data: Interactions) -> None:
    assert generate(num_users=600, num_items=300, seed=7) == data
    other = generate(num_users=600, num_items=300, seed=8)
    assert other != data
    assert not all(
        np.array_equal(a, b) for a, b in zip(other.sequences[:20], data.sequences[:20], strict=True)
    )


def test_shape_and_conventions(data: Interactions) -> None:
    assert data.num_users == 600
    assert data.users.id(0) == "u00001"
    assert 0 < data.num_items <= 300
    assert data.item_popularity().min() >= 1  # only drawn items are in the catalog
    lengths = [len(s) for s in data.sequences]
    assert min(lengths) >= 5
    assert 15 < np.mean(lengths) < 25
    assert data.timestamps is not None
    assert all((np.diff(t) > 0).all() for t in data.timestamps)  # strictly increasing
    assert len(data.item_titles) == data.num_items
    assert len(set(data.item_titles.values())) == data.num_items  # names are unique


def test_event_mix(data: Interactions) -> None:
    counts = data.event_counts()
    assert set(counts) == set(EVENT_NAMES)  # every type occurs
    total = data.num_interactions
    assert (counts["click"] + counts["view"]) / total > 0.6
    assert 0.01 < (counts["dislike"] + counts["dismiss"]) / total < 0.15
    # negatives land on items of topics the user rarely engages with positively
    topic = {i: m["genres"][0] for i, m in data.item_meta.items()}
    neg_rate_on_own_topic = []
    for seq, ev in zip(data.sequences, data.events, strict=True):
        pos_topics = {topic[int(i)] for i in seq[~negative_mask(ev)]}
        negs = seq[negative_mask(ev)]
        if len(negs):
            neg_rate_on_own_topic.append(np.mean([topic[int(i)] in pos_topics for i in negs]))
    assert np.mean(neg_rate_on_own_topic) < 0.5


def test_item_names_are_readable_and_deterministic() -> None:
    assert item_name(0, 6) == "Jazz Guitar Tutorial #1"
    assert item_name(6, 6) == "Jazz Guitar Tutorial #2"  # next episode of the series
    assert item_name(6 * SERIES_LENGTH, 6) == "Jazz Piano Tutorial #1"
    assert item_name(1, 6) == "Cooking Pasta Recipe #1"
    names = [item_name(i, 8) for i in range(2000)]
    assert len(set(names)) == 2000


def test_csv_round_trip_is_equal(data: Interactions, tmp_path: Path) -> None:
    path = tmp_path / "synthetic.csv"
    write_csv(data, path)
    back, report = load(path)
    assert report.format == "csv"
    assert report.clean
    assert back == data  # ids, order, events, exact timestamps, titles, genres


def test_popularity_is_heavy_tailed(data: Interactions) -> None:
    counts = np.sort(data.item_popularity())[::-1]
    top_decile_share = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_decile_share > 0.3  # uniform would be 0.1
    assert counts[0] > 10 * np.median(counts)


def transition_scorer(split: Split) -> Scorer:
    """Score = how often each item followed the user's last positive item in training."""
    n = split.data.num_items
    follows = np.zeros((n, n), dtype=np.float32)
    for items, events in zip(split.train, split.train_events, strict=True):
        positive = items[~negative_mask(events)]
        np.add.at(follows, (positive[:-1], positive[1:]), 1.0)
    tie_break = training_popularity(split).astype(np.float32) * 1e-4

    def score(
        _user: int, items: npt.NDArray[np.int32], events: npt.NDArray[np.int8]
    ) -> npt.NDArray[np.float32]:
        positive = items[~negative_mask(events)]
        return follows[positive[-1]] + tie_break

    return score


def test_learnable_sequential_baseline_beats_popularity(data: Interactions) -> None:
    split = leave_one_out(data)
    assert split.num_dropped == 0
    popular = popularity_baseline(split, "test", ks=(10,))
    sequential = evaluate(split, transition_scorer(split), "test", ks=(10,))
    assert sequential["hr@10"] > 1.3 * popular["hr@10"]
    assert sequential["ndcg@10"] > 1.3 * popular["ndcg@10"]


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="num_topics"):
        generate(num_topics=99)
    with pytest.raises(ValueError, match="drift"):
        generate(drift=1.5)
    with pytest.raises(ValueError, match="sequel_prob \\+ noise"):
        generate(sequel_prob=0.8, noise=0.5)


def test_a_release_gives_only_the_late_users_new_items_after_every_earlier_event() -> None:
    released = generate(
        num_users=600, num_items=300, seed=7, late_users=100, new_items=60, new_share=0.4
    )
    ids = released.items.ids
    is_new = np.asarray([int(item[1:]) >= 300 for item in ids])
    assert all(not is_new[s].any() for s in released.sequences[:500])
    late = np.concatenate(released.sequences[500:])
    assert 0.25 < is_new[late].mean() < 0.55  # about new_share of the late users' events
    assert all(released.item_titles[i].endswith(NEW_SUFFIX) == is_new[i] for i in range(len(ids)))
    assert released.timestamps is not None
    before = max(float(t.max()) for t in released.timestamps[:500])
    assert min(float(t.min()) for t in released.timestamps[500:]) > before
    with pytest.raises(ValueError, match="late users"):
        generate(num_users=10, num_items=30, new_items=5)
