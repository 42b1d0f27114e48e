"""Seeded synthetic interactions: the offline default for demos and fast tests.

The generative story (every random draw comes from ``numpy.random.default_rng(seed)``):

- The catalog has ``num_items`` items over ``num_topics`` topics (item ``j`` is in topic
  ``j % num_topics``). Within a topic, items form series of :data:`SERIES_LENGTH` episodes with
  readable names built from fixed word lists, e.g. ``"Jazz Guitar Tutorial #3"``; names do not
  depend on the seed. Item popularity is Zipf-like: ``1 / (rank + 1) ** zipf_exponent`` over a
  seeded random ranking of the catalog.
- Each user has a preference over topics (a sparse Dirichlet draw) and a current topic that
  drifts: before each event, with probability ``drift`` it is redrawn from the preference.
- The next item is, with probability ``sequel_prob``, the next episode of the previous item's
  series (when that item is in the current topic and has one); with probability ``noise``, any
  item by global popularity; otherwise an item of the current topic by popularity. So the next
  item depends on the recent items: a sequential model beats popularity.
- Events: items of a topic the user cares little about (preference < ``1 / (2 * num_topics)``)
  get ``dislike``/``dismiss`` with probability ``negative_prob`` (else ``view``), and after such a
  rejection the current topic is redrawn; other items get ``view``/``click``/``purchase``/``like``
  with fixed probabilities.
- Timestamps (float64 Unix seconds) start in 2024 and increase by ``1 + Exp(mean_gap)``.
- A release (``late_users > 0``): the last ``late_users`` users are active only after it, and
  every earlier user's events precede it. At the release ``new_items`` items appear (catalog
  indices ``num_items ..``, titles ending in :data:`NEW_SUFFIX`, popularity Zipf-like among
  themselves) holding ``new_share`` of the whole popularity mass. So only the late users' events
  contain the new items: a model trained on the earlier users cannot recommend them.

The result follows the loader conventions (:class:`~pocketrec.core.dataset.InteractionsBuilder`):
users ``"u00001"...``, items ``"i00000"...`` (the catalog index), indexed by first appearance,
so items never drawn are not in ``items``. ``item_meta[i] == {"genres": [topic]}``.
:func:`write_csv` writes it in the generic CSV format; :func:`~pocketrec.core.loaders.load`
reads it back equal.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pocketrec.core.dataset import Interactions, InteractionsBuilder
from pocketrec.core.events import EventType
from pocketrec.core.loaders import write_csv

__all__ = ["NEW_SUFFIX", "SERIES_LENGTH", "TOPICS", "generate", "item_name", "write_csv"]

SERIES_LENGTH = 4
"""Episodes per series (``#1`` .. ``#4``)."""
NEW_SUFFIX = " (new)"
"""Ends the title of every item released for the late users."""

TOPICS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Jazz", ("Guitar", "Piano", "Saxophone", "Trumpet", "Bass", "Drums"), ("Tutorial", "Session")),
    ("Cooking", ("Pasta", "Curry", "Bread", "Soup", "Dessert", "Noodle"), ("Recipe", "Basics")),
    ("Fitness", ("Yoga", "Running", "Pilates", "Strength", "HIIT", "Core"), ("Workout", "Plan")),
    ("Travel", ("Kyoto", "Lisbon", "Iceland", "Hanoi", "Tuscany", "Oaxaca"), ("Guide", "Vlog")),
    ("Science", ("Black Holes", "Genes", "Volcanoes", "Quantum", "Reefs", "Robots"), ("Lecture",)),
    ("Gaming", ("Speedrun", "Strategy", "Retro", "Puzzle", "RPG", "Racing"), ("Guide", "Tips")),
    ("Gardening", ("Tomato", "Orchid", "Compost", "Bonsai", "Herb", "Cactus"), ("Tips", "Diary")),
    ("Photography", ("Portrait", "Landscape", "Street", "Macro", "Night", "Film"), ("Course",)),
)
"""(topic, subjects, kinds): item names are ``"{topic} {subject} {kind} #{episode}"``."""

# Event mix of on-interest items: view, click, purchase, like.
_POSITIVE_EVENTS = (EventType.VIEW, EventType.CLICK, EventType.PURCHASE, EventType.LIKE)
_POSITIVE_CUM = (0.30, 0.85, 0.93, 1.0)
_START = 1_704_067_200.0  # 2024-01-01T00:00:00Z


def item_name(item: int, num_topics: int) -> str:
    """Readable, unique name of catalog item ``item`` (``1 <= num_topics <= len(TOPICS)``)."""
    topic, subjects, kinds = TOPICS[item % num_topics]
    j = item // num_topics  # position within the topic
    series, episode = divmod(j, SERIES_LENGTH)
    subject = subjects[series % len(subjects)]
    kind = kinds[(series // len(subjects)) % len(kinds)]
    volume = series // (len(subjects) * len(kinds))
    suffix = f" Vol. {volume + 1}" if volume else ""
    return f"{topic} {subject} {kind}{suffix} #{episode + 1}"


def _cumulative(weights: npt.NDArray[np.floating[Any]]) -> list[float]:
    """Normalised cumulative weights as a Python list (for ``bisect``)."""
    c = np.cumsum(weights, dtype=np.float64)
    return [float(x) for x in c / c[-1]]


def generate(
    num_users: int = 1000,
    num_items: int = 400,
    *,
    seed: int = 0,
    num_topics: int = 6,
    mean_events: float = 20.0,
    min_events: int = 5,
    drift: float = 0.1,
    sequel_prob: float = 0.35,
    noise: float = 0.1,
    negative_prob: float = 0.6,
    zipf_exponent: float = 1.0,
    mean_gap: float = 3600.0,
    late_users: int = 0,
    new_items: int = 0,
    new_share: float = 0.4,
) -> Interactions:
    """Generate interactions (see the module docstring); same arguments -> equal result.

    ``num_items``: catalog size drawn from; ``mean_events`` / ``min_events``: sequence length is
    ``min_events + Poisson(mean_events - min_events)``; probabilities in ``[0, 1]``;
    ``mean_gap``: mean seconds between a user's events; ``late_users`` (of ``num_users``),
    ``new_items`` and ``new_share`` (in ``[0, 1)``): the release (module docstring).
    """
    if not 1 <= num_topics <= len(TOPICS):
        raise ValueError(f"num_topics must be in 1..{len(TOPICS)}, got {num_topics}")
    if num_users < 1 or num_items < num_topics or min_events < 1 or mean_events < min_events:
        raise ValueError("need num_users >= 1, num_items >= num_topics, 1 <= min_events <= mean")
    probabilities = {"drift": drift, "sequel_prob": sequel_prob, "noise": noise}
    probabilities["negative_prob"] = negative_prob
    for name, p in probabilities.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    if sequel_prob + noise > 1.0:
        raise ValueError("sequel_prob + noise must be <= 1")
    if not 0 <= late_users < num_users or new_items < 0 or not 0.0 <= new_share < 1.0:
        raise ValueError("need 0 <= late_users < num_users, new_items >= 0, 0 <= new_share < 1")
    if new_items and not late_users:
        raise ValueError("new items need late users (late_users > 0) to draw them")

    rng = np.random.default_rng(seed)
    weight = _zipf(num_items, zipf_exponent, rng)
    catalog = _Catalog.make(weight, num_topics)
    if new_items:
        fresh = _zipf(new_items, zipf_exponent, rng)
        fresh *= new_share / (1.0 - new_share) * weight.sum() / fresh.sum()
        weight = np.concatenate([weight, fresh])
    b = InteractionsBuilder()
    for j in range(num_items + new_items):
        b.titles[_item_id(j)] = item_name(j, num_topics) + (NEW_SUFFIX if j >= num_items else "")
        b.meta[_item_id(j)] = {"genres": [TOPICS[j % num_topics][0]]}
    lengths = min_events + rng.poisson(mean_events - min_events, size=num_users)
    off_interest = 1.0 / (2.0 * num_topics)
    start = latest = _START
    for u in range(num_users):
        user = f"u{u + 1:05d}"
        if u == num_users - late_users:  # the release: after every earlier event
            catalog = _Catalog.make(weight, num_topics)
            start = latest + 86400.0
        pref = rng.dirichlet(np.full(num_topics, 0.3)).tolist()
        pref_cum = _cumulative(np.asarray(pref))
        n = int(lengths[u])
        draws = rng.random((n, 5)).tolist()
        gaps = 1.0 + rng.exponential(mean_gap, n)
        times = (start + rng.uniform(0.0, 30 * 86400.0) + np.cumsum(gaps)).tolist()
        latest = max(latest, times[-1])
        topic = _pick(pref_cum, draws[0][0])
        last = -1  # last item with positive feedback
        for step, (r_topic, r_kind, r_item, r_event, r_neg) in enumerate(draws):
            if step and r_topic < drift:
                topic = _pick(pref_cum, r_topic / drift)
            if r_kind < sequel_prob and catalog.has_sequel(last, topic):
                item = catalog.sequel[last]
            elif sequel_prob <= r_kind < sequel_prob + noise:
                item = _pick(catalog.global_cum, r_item)
            else:
                item = catalog.topic_items[topic][_pick(catalog.topic_cum[topic], r_item)]
            if pref[catalog.topic_of[item]] < off_interest:
                event = EventType.VIEW
                if r_neg < negative_prob:  # rejected: the user also leaves this topic
                    event = EventType.DISMISS if r_event < 0.5 else EventType.DISLIKE
                    topic = _pick(pref_cum, r_neg / negative_prob)
            else:
                event = _POSITIVE_EVENTS[_pick(_POSITIVE_CUM, r_event)]
                last = item
            b.add(user, _item_id(item), int(event), times[step])
    return b.build(name=f"synthetic(seed={seed})")


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Popularity weights ``1 / (rank + 1) ** exponent`` over a seeded random ranking."""
    return np.asarray(1.0 / (rng.permutation(n) + 1.0) ** exponent, dtype=np.float64)


def _item_id(item: int) -> str:
    return f"i{item:05d}"


def _pick(cumulative: Sequence[float], r: float) -> int:
    """Index drawn by uniform ``r`` in [0, 1) from normalised cumulative weights."""
    return min(bisect_right(cumulative, r), len(cumulative) - 1)


@dataclass(frozen=True)
class _Catalog:
    """Item topics, series successors and popularity, as Python lists for the hot loop."""

    topic_of: list[int]
    sequel: list[int]  # next episode of the series, -1 after the last one
    topic_items: list[list[int]]
    topic_cum: list[list[float]]
    global_cum: list[float]

    @classmethod
    def make(cls, weight: npt.NDArray[np.float64], num_topics: int) -> _Catalog:
        """The catalog of ``len(weight)`` items with popularity weights ``weight``."""
        num_items = len(weight)
        index = np.arange(num_items)
        topic_of = index % num_topics
        members = [np.flatnonzero(topic_of == t) for t in range(num_topics)]
        episode = (index // num_topics) % SERIES_LENGTH
        has_next = (episode < SERIES_LENGTH - 1) & (index + num_topics < num_items)
        return cls(
            topic_of=topic_of.tolist(),
            sequel=np.where(has_next, index + num_topics, -1).tolist(),
            topic_items=[m.tolist() for m in members],
            topic_cum=[_cumulative(weight[m]) for m in members],
            global_cum=_cumulative(weight),
        )

    def has_sequel(self, item: int, topic: int) -> bool:
        """True when ``item`` (-1: none) has a next episode and is in ``topic``."""
        return item >= 0 and self.sequel[item] >= 0 and self.topic_of[item] == topic
