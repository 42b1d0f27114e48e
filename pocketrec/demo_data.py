"""The demo's data: the synthetic generator (offline default) or a dataset, split by user into the
users the first model is trained on and the held-out users the simulated devices replay.

Held-out users are never seen by version 1. Each one's history *before* their leave-one-out test
target (``pocketrec.core.split``) is what their device observes and uploads; the test target is
never replayed or uploaded, so both versions are evaluated on the same unseen targets.

With the synthetic generator the held-out users are the ones active *after a release*
(``pocketrec.core.synthetic``): version 1 is trained on the users before it, and new items
(:data:`NEW_ITEMS_FRACTION` of the catalog, :data:`NEW_SHARE` of the events) appear only in what
the devices observe and upload. Version 1's catalog cannot hold them; version 2, trained on the
uploaded feedback, can. With ``--data`` the held-out users are a seeded random sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from pocketrec.core import synthetic
from pocketrec.core.dataset import Interactions, InteractionsBuilder
from pocketrec.core.heldout import HeldOut
from pocketrec.core.loaders import load
from pocketrec.core.split import leave_one_out

NEW_ITEMS_FRACTION = 0.25
"""Synthetic data: items released after version 1, as a fraction of the catalog before it."""
NEW_SHARE = 0.4
"""Synthetic data: the released items' share of the popularity mass after the release."""


@dataclass(frozen=True)
class DemoData:
    """``train``: version 1's training data; ``heldout``: the devices' users (whole sequences,
    test targets included, for evaluation); ``devices``: the held-out user ids of each device."""

    train: Interactions
    heldout: Interactions
    devices: list[list[str]]

    def titles(self) -> dict[str, str]:
        """Item id -> title over both parts (empty when the data has no titles)."""
        out: dict[str, str] = {}
        for part in (self.train, self.heldout):
            out.update({part.items.id(i): t for i, t in part.item_titles.items()})
        return out


@dataclass(frozen=True)
class DeviceEvent:
    """One event a device replays: profile, item id, event code, Unix time."""

    user: str
    item: str
    event: int
    ts: float


def make_demo_data(
    path: str | os.PathLike[str] | None,
    *,
    users: int,
    items: int,
    devices: int,
    heldout_fraction: float,
    seed: int,
) -> DemoData:
    """Load ``path`` (any format ``pocketrec train`` reads) and hold out a seeded random
    ``heldout_fraction`` of the users that a leave-one-out split keeps; or generate ``users``
    synthetic users over ``items`` items whose last ``heldout_fraction`` come after a release of
    new items, and hold those out (module docstring). Held-out users are dealt round-robin to
    ``devices`` devices."""
    if devices < 1 or not 0 < heldout_fraction < 1:
        raise ValueError("need --devices >= 1 and a held-out fraction in (0, 1)")
    late = max(devices, round(users * heldout_fraction))
    if path is None:
        data = synthetic.generate(
            num_users=users, num_items=items, seed=seed, late_users=late,
            new_items=max(1, round(items * NEW_ITEMS_FRACTION)), new_share=NEW_SHARE,
        )  # fmt: skip
    else:
        data, _report = load(path)
    kept = [data.users.id(int(u)) for u in leave_one_out(data).users]
    if path is None:  # the late users: never trained on, even those the split drops
        late_ids = {data.users.id(u) for u in range(data.num_users - late, data.num_users)}
        held_ids = [user for user in kept if user in late_ids]
        train_ids = [user for user in data.users if user not in late_ids]
    else:
        count = max(devices, round(len(kept) * heldout_fraction))
        if count >= len(kept):
            raise ValueError(f"{len(kept)} usable users: too few to hold out {count} of them")
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(len(kept), size=count, replace=False).tolist())
        held_ids = [kept[k] for k in chosen]
        held_set = set(held_ids)
        train_ids = [user for user in data.users if user not in held_set]
    if not devices <= len(held_ids) < len(kept):
        raise ValueError(f"{len(held_ids)} held-out users of {len(kept)}: need {devices} or more")
    return DemoData(
        train=subset(data, train_ids, f"{data.name} (training users)"),
        heldout=subset(data, held_ids, f"{data.name} (held-out users)"),
        devices=[held_ids[d::devices] for d in range(devices)],
    )


def _add_user(b: InteractionsBuilder, data: Interactions, u: int, as_user: str) -> None:
    items, events = data.sequences[u].tolist(), data.events[u].tolist()
    times = (
        data.timestamps[u].tolist()
        if data.timestamps is not None
        else [float(k) for k in range(len(items))]
    )
    for item, event, ts in zip(items, events, times, strict=True):
        b.add(as_user, data.items.id(item), int(event), float(ts))


def _carry_items(b: InteractionsBuilder, data: Interactions) -> None:
    b.titles.update({data.items.id(i): t for i, t in data.item_titles.items()})
    b.meta.update({data.items.id(i): m for i, m in data.item_meta.items()})


def subset(data: Interactions, user_ids: list[str], name: str) -> Interactions:
    """The users ``user_ids`` of ``data`` (titles and metadata kept)."""
    b = InteractionsBuilder()
    _carry_items(b, data)
    for user in user_ids:
        _add_user(b, data, data.users.index(user), user)
    return b.build(name=name)


def merge(first: Interactions, second: Interactions, name: str) -> Interactions:
    """Both datasets' users as one (user ids must differ; titles of both kept)."""
    b = InteractionsBuilder()
    for part in (first, second):
        _carry_items(b, part)
        for u in range(part.num_users):
            _add_user(b, part, u, part.users.id(u))
    return b.build(name=name)


def device_events(heldout: Interactions, user_ids: list[str]) -> list[DeviceEvent]:
    """The events a device replays for ``user_ids``: each user's history before their
    leave-one-out test target (negative feedback included), users interleaved by time."""
    split = leave_one_out(heldout)
    test = HeldOut.from_split(split).stage("test")
    kept = [heldout.users.id(int(u)) for u in split.users]
    row_of = {user: k for k, user in enumerate(kept)}
    out: list[DeviceEvent] = []
    for user in user_ids:
        k = row_of[user]
        u = heldout.users.index(user)
        times = heldout.timestamps[u] if heldout.timestamps is not None else None
        for pos, (item, event) in enumerate(
            zip(test.items[k].tolist(), test.events[k].tolist(), strict=True)
        ):
            ts = float(times[pos]) if times is not None else float(pos)
            out.append(DeviceEvent(user, heldout.items.id(item), int(event), ts))
    out.sort(key=lambda e: e.ts)
    return out
