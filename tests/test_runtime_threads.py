"""Recommender from several threads, and replace_bundle while serving."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pocketrec import Recommender
from pocketrec.core import bundle as fmt
from pocketrec.core.errors import BundleError
from pocketrec.runtime.bundle import open_bundle
from pocketrec.runtime.serving import ServedBundle

EVENTS = ("view", "click", "purchase", "like", "dislike", "dismiss")


def _history(seed: int, length: int = 40) -> list[tuple[str, str]]:
    """A user's events over items i00000..i00149 (i00120 and up are missing from ``v2``)."""
    rng = np.random.default_rng(seed)
    items = rng.integers(0, 150, size=length)
    events = rng.choice(len(EVENTS), size=length, p=[0.3, 0.4, 0.1, 0.1, 0.05, 0.05])
    return [(f"i{i:05d}", EVENTS[e]) for i, e in zip(items, events, strict=True)]


@pytest.fixture(autouse=True)
def _switch_threads_often() -> Iterator[None]:
    """Let the interpreter switch threads every 10 µs, so that calls really interleave."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(interval)


def _run_threads(targets: list[Callable[[], None]]) -> None:
    """Run the callables in threads started together; re-raise the first error."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(targets))

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            start.wait()
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def test_threads_serving_their_own_users_match_a_serial_run(runtime_bundles: Any) -> None:
    histories = {f"user{n}": _history(n) for n in range(4)}
    serial = Recommender.open(runtime_bundles.f32)
    for user, events in histories.items():
        for item, event in events:
            serial.observe(item, event, user=user)
    concurrent = Recommender.open(runtime_bundles.f32)

    def serve(user: str) -> Callable[[], None]:
        def run() -> None:
            for item, event in histories[user]:
                concurrent.observe(item, event, user=user)
                concurrent.recommend(10, user=user)

        return run

    _run_threads([serve(user) for user in histories])
    for user in histories:
        np.testing.assert_array_equal(
            concurrent.user_vector(user=user), serial.user_vector(user=user)
        )
        assert concurrent.recommend(20, user=user)[0] == serial.recommend(20, user=user)[0]


def test_concurrent_events_of_one_user_are_never_lost(
    runtime_bundles: Any, replay_vector: Any
) -> None:
    rec = Recommender.open(runtime_bundles.f32)

    def hammer() -> None:
        for _ in range(25):
            rec.observe("i00042", "click", user="shared")
            rec.recommend(5, user="shared")

    _run_threads([hammer] * 4)  # the same event 100 times, in any order: one result
    expected = replay_vector(runtime_bundles.f32, [("i00042", "click")] * 100)
    np.testing.assert_array_equal(rec.user_vector(user="shared"), expected)


def _catalog_ids(path: Path) -> set[str]:
    return set(open_bundle(path).items.ids)


def test_replace_bundle_rebuilds_each_user_by_replay(
    runtime_bundles: Any, replay_vector: Any
) -> None:
    history = [("i00003", "click"), ("i00140", "view"), ("i00007", "dismiss"), ("i00010", "like")]
    rec = Recommender.open(runtime_bundles.f32)
    for item, event in history:
        rec.observe(item, event, user="ann")
    before = rec.user_vector(user="ann")
    rec.replace_bundle(runtime_bundles.v2)
    info = rec.info()
    assert (info["model_version"], info["items"]) == (2, len(_catalog_ids(runtime_bundles.v2)))
    assert "i00140" not in _catalog_ids(runtime_bundles.v2)  # skipped in the replay
    np.testing.assert_array_equal(
        rec.user_vector(user="ann"), replay_vector(runtime_bundles.v2, history)
    )
    np.testing.assert_array_equal(
        rec.user_vector(user="new"), replay_vector(runtime_bundles.v2, [])
    )
    ids = rec.recommend(200, user="ann", exclude_seen=False)[0]
    assert "i00007" not in ids  # rejections carry over by id, and so do consumed items
    assert {"i00003", "i00010"} <= set(ids)
    assert {"i00003", "i00010"}.isdisjoint(rec.recommend(200, user="ann")[0])
    rec.set_available(["i00130", "i00002"], False)  # i00130: not in v2, remembered by id
    assert rec.info()["unavailable"] == 1
    rec.replace_bundle(runtime_bundles.f32)  # and back: the same events, the same vector
    np.testing.assert_array_equal(rec.user_vector(user="ann"), before)
    assert rec.info()["unavailable"] == 2
    assert {"i00130", "i00002"}.isdisjoint(rec.recommend(200, user="ann")[0])


def test_the_replay_uses_the_most_recent_events_only(
    runtime_bundles: Any, replay_vector: Any
) -> None:
    history = _history(7, length=12)
    rec = Recommender.open(runtime_bundles.f32, recent_events=5)
    for item, event in history:
        rec.observe(item, event)
    np.testing.assert_array_equal(rec.user_vector(), replay_vector(runtime_bundles.f32, history))
    rec.replace_bundle(runtime_bundles.f32)
    np.testing.assert_array_equal(
        rec.user_vector(), replay_vector(runtime_bundles.f32, history[-5:])
    )


def test_a_bad_new_bundle_leaves_the_old_one_serving(runtime_bundles: Any, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(runtime_bundles.v2, broken)
    (broken / fmt.CATALOG).write_bytes(b"\x93NUMPY")
    rec = Recommender.open(runtime_bundles.f32)
    rec.observe("i00003")
    before = rec.recommend(10)
    with pytest.raises(BundleError, match=r"catalog\.npy"):
        rec.replace_bundle(broken)
    assert rec.info()["model_version"] == 1
    assert rec.recommend(10)[0] == before[0]


def test_replace_bundle_while_threads_observe_and_recommend(
    runtime_bundles: Any, replay_vector: Any
) -> None:
    rec = Recommender.open(runtime_bundles.f32)
    histories = {f"user{n}": _history(10 + n, length=60) for n in range(3)}
    catalogs = [_catalog_ids(runtime_bundles.f32), _catalog_ids(runtime_bundles.v2)]
    finished: list[str] = []

    def serve(user: str) -> Callable[[], None]:
        def run() -> None:
            for item, event in histories[user]:
                rec.observe(item, event, user=user)
                ids, scores = rec.recommend(10, user=user)
                assert len(ids) == len(scores) == 10
                assert any(set(ids) <= catalog for catalog in catalogs)
            finished.append(user)

        return run

    def swap() -> None:
        paths = [runtime_bundles.v2, runtime_bundles.f32]
        n = 0
        while len(finished) < len(histories) or n < 4:
            rec.replace_bundle(paths[n % 2])
            n += 1
        if n % 2:  # end on the float32 bundle either way
            rec.replace_bundle(runtime_bundles.f32)

    _run_threads([*(serve(user) for user in histories), swap])
    assert rec.info()["model_version"] == 1
    for user, events in histories.items():
        np.testing.assert_array_equal(
            rec.user_vector(user=user), replay_vector(runtime_bundles.f32, events)
        )


def test_a_call_in_flight_finishes_on_the_old_bundle(
    runtime_bundles: Any, replay_vector: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recommender.open(runtime_bundles.f32)
    old = rec.ranking().served
    entered, release = threading.Event(), threading.Event()
    real = ServedBundle.step_model

    def slow_step_model(self: ServedBundle) -> Any:
        model = real(self)
        if self is not old:
            return model

        class Slow:
            def checked_step(self, *args: Any) -> Any:
                entered.set()
                release.wait(10)
                return model.checked_step(*args)

        return Slow()

    monkeypatch.setattr(ServedBundle, "step_model", slow_step_model)
    observer = threading.Thread(target=rec.observe, args=("i00003", "click"), kwargs={"user": "u"})
    observer.start()
    assert entered.wait(10)
    replacer = threading.Thread(target=rec.replace_bundle, args=(runtime_bundles.v2,))
    replacer.start()
    deadline = time.monotonic() + 10
    while rec.info()["model_version"] != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.info()["model_version"] == 2  # swapped while the call is still running ...
    assert rec.observe("i00004", user="other")  # ... other users are served by the new one ...
    time.sleep(0.1)
    assert replacer.is_alive()  # ... and u waits for its call in flight
    release.set()
    observer.join(10)
    replacer.join(10)
    assert not observer.is_alive()
    assert not replacer.is_alive()
    np.testing.assert_array_equal(
        rec.user_vector(user="u"), replay_vector(runtime_bundles.v2, [("i00003", "click")])
    )
