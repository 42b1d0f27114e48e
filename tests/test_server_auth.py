"""Device tokens and the server process's token cache (``pocketrec.server.auth``)."""

from __future__ import annotations

import pytest
from conftest import ManualClock

from pocketrec.server.auth import TokenCache, bearer_token, hash_token, new_token


def test_a_cached_token_is_trusted_for_its_seconds_and_then_asked_again() -> None:
    clock = ManualClock()
    cache = TokenCache(5.0, clock=clock)
    token = new_token()
    assert cache.get(token) is None
    cache.put(token, "phone")
    clock.now += 4.9
    assert cache.get(token) == "phone"
    clock.now += 0.1
    assert cache.get(token) is None
    assert cache.get(token) is None  # forgotten, not resurrected


def test_zero_seconds_remembers_nothing() -> None:
    cache = TokenCache(0.0)
    cache.put("t", "phone")
    assert cache.get("t") is None


def test_the_oldest_tokens_are_forgotten_first_beyond_the_size() -> None:
    cache = TokenCache(60.0, size=2, clock=ManualClock())
    cache.put("a", "A")
    cache.put("b", "B")
    cache.put("a", "A")  # refreshed: now the newest
    cache.put("c", "C")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")


def test_the_cache_keeps_hashes_not_tokens() -> None:
    cache = TokenCache(60.0)
    token = new_token()
    cache.put(token, "phone")
    assert list(vars(cache)["_devices"]) == [hash_token(token)]


@pytest.mark.parametrize(("seconds", "size"), [(-1.0, 10), (3601.0, 10), (5.0, 0)])
def test_out_of_range_settings_are_refused(seconds: float, size: int) -> None:
    with pytest.raises(ValueError, match="auth cache"):
        TokenCache(seconds, size=size)


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer ", None),
     (None, None), ("", None)],
)  # fmt: skip
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token
