"""``Recommender``: what an app embeds. Each event updates the user's interest vector with one call
of the bundle's TFLite step model (no history re-encoding), and the next ``recommend`` ranks the
memory-mapped catalog with that vector through the native top-k kernel at once.

Thread-safety design: one lock per user, held while that user's state is read or changed (an
``observe`` step, building a ranking's query and mask, ``reset``); the served bundle is one
reference swapped atomically by :meth:`Recommender.replace_bundle`, read under the user's lock, so
a user's state is never mixed from two bundles. The kernel runs outside the lock on the bundle
the call started with. Each thread gets its own TFLite interpreter (they are not thread-safe).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pocketrec.core.events import EVENT_NAMES, EventType, event_code
from pocketrec.native import registry
from pocketrec.native.arguments import check_k
from pocketrec.runtime.bundle import open_bundle
from pocketrec.runtime.feedback import DEFAULT_CAPACITY, DEFAULT_DECAY, DEFAULT_DEMOTION
from pocketrec.runtime.ranking import Ranking, apply_call_filters, check_ids
from pocketrec.runtime.serving import ServedBundle
from pocketrec.runtime.users import DEFAULT_RECENT_EVENTS, ObservedEvent, UserState

logger = logging.getLogger("pocketrec.runtime")

DEFAULT_USER = "default"


class Recommender:
    """Real-time, per-event personalization on the device (make one with :meth:`open`).

    Several users (profiles) share one bundle; each has its own state. Item ids are the external
    string ids of the bundle's ``items.json``. Events: ``view``, ``click``, ``purchase``,
    ``like`` (positive: the item counts as consumed) and ``dislike``, ``dismiss`` (negative
    feedback: the item is never returned again and similar items are demoted at once, see
    ``pocketrec.runtime.feedback``). Every event also goes through the step model, as in
    training.
    """

    def __init__(
        self,
        served: ServedBundle,
        *,
        backend: str = "auto",
        demotion: float = DEFAULT_DEMOTION,
        recent_events: int = DEFAULT_RECENT_EVENTS,
        feedback_items: int = DEFAULT_CAPACITY,
        feedback_decay: float = DEFAULT_DECAY,
    ) -> None:
        """Prefer :meth:`open`. ``served``: the bundle to serve (see ``open`` for the rest)."""
        if not (math.isfinite(demotion) and demotion >= 0):
            raise ValueError(f"demotion must be a finite number >= 0, got {demotion!r}")
        if recent_events < 1 or feedback_items < 0 or not 0 <= feedback_decay <= 1:
            raise ValueError(
                "need recent_events >= 1, feedback_items >= 0 and 0 <= feedback_decay <= 1"
            )
        self._backend = registry.resolve(backend)
        self._demotion = float(demotion)
        self._recent_events = recent_events
        self._feedback_items = feedback_items
        self._feedback_decay = float(feedback_decay)
        self._served = served
        self._unavailable_ids: set[str] = set()
        self._users: dict[str, UserState] = {}
        self._users_lock = threading.Lock()  # guards the dict (creating a user)
        self._admin_lock = threading.Lock()  # serialises replace_bundle and set_available

    @classmethod
    def open(
        cls,
        bundle_dir: str | os.PathLike[str],
        db: str | os.PathLike[str] | None = None,
        backend: str = "auto",
        *,
        demotion: float = DEFAULT_DEMOTION,
        recent_events: int = DEFAULT_RECENT_EVENTS,
        feedback_items: int = DEFAULT_CAPACITY,
        feedback_decay: float = DEFAULT_DECAY,
    ) -> Recommender:
        """Verify and open the bundle directory ``bundle_dir``.

        Args:
            bundle_dir: a bundle written by ``pocketrec convert``; every file's length and
                SHA-256 is checked before anything reaches the interpreter (``BundleError``
                naming the file otherwise). The catalog is memory-mapped.
            db: a storage path to keep the state across restarts: not available yet
                (``ValueError`` unless ``None``).
            backend: top-k backend, ``"auto"``, ``"c"``, ``"numba"`` or ``"numpy"``.
            demotion: ``λ`` of the negative-feedback demotion (0 switches it off).
            recent_events: events kept per user to rebuild its state on :meth:`replace_bundle`.
            feedback_items: how many recent rejections per user demote similar items.
            feedback_decay: a rejection's demotion is multiplied by this for every later event.
        """
        if db is not None:
            raise ValueError("db persistence needs pocketrec.storage (not available yet)")
        return cls(
            ServedBundle(open_bundle(Path(bundle_dir))),
            backend=backend,
            demotion=demotion,
            recent_events=recent_events,
            feedback_items=feedback_items,
            feedback_decay=feedback_decay,
        )

    # ------------------------------------------------------------------ events

    def observe(
        self,
        item_id: str,
        event: str | EventType = "click",
        *,
        user: str = DEFAULT_USER,
        ts: float | datetime | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record one event of ``user`` on ``item_id``: one step-model call, ``O(1)``. Returns
        whether the catalog holds the item.

        ``event``: a name (``"click"``, ``"dislike"``, …) or an ``EventType``; ``ts``: Unix
        seconds or an aware ``datetime`` (default: now; events are applied in call order);
        ``context``: kept with the event for the app (not used by the model). An id that is not
        in the catalog is accepted (it may be new): it is logged and kept in the user's event
        buffer, the user's vector is unchanged. A wrong event, ``ts`` or argument type raises
        ``ValueError``.

        Thread-safe: events of one user are applied one at a time, in the order the calls take
        that user's lock; different users proceed in parallel.
        """
        if not isinstance(item_id, str):
            raise ValueError(f"item_id must be a str, got {item_id!r}")
        if context is not None and not isinstance(context, Mapping):
            raise ValueError(f"context must be a mapping or None, got {type(context).__name__}")
        record = ObservedEvent(
            item_id, _event_code(event), _timestamp(ts), None if context is None else dict(context)
        )
        state = self._user(user)
        with state.lock:
            served = self._attach(state)
            known = state.apply(record)
        if not known:
            logger.info(
                "item %r is not in the catalog of bundle version %d: event %s of user %r kept, "
                "the user's vector is unchanged",
                item_id,
                served.manifest.model_version,
                EVENT_NAMES[record.event],
                user,
            )
        return known

    def reset(self, *, user: str = DEFAULT_USER) -> None:
        """Forget ``user``'s events and state (back to the bundle's ``initial_user``).

        Thread-safe: waits for the user's calls in progress."""
        state = self._user(user)
        with state.lock:
            state.clear()

    # ------------------------------------------------------------------ ranking

    def recommend(
        self,
        k: int = 10,
        *,
        user: str = DEFAULT_USER,
        exclude_seen: bool = True,
        exclude: Iterable[str] = (),
        only: Iterable[str] | None = None,
    ) -> tuple[list[str], npt.NDArray[np.float32]]:
        """The ``k`` best items for ``user``: external ids (list of str) and float32 scores, best
        first (fewer when fewer items are eligible).

        Never returned: unavailable items (:meth:`set_available`), items the user rejected
        (``dislike``/``dismiss``), consumed items (positive events) when ``exclude_seen``,
        ``exclude`` ids, and with ``only`` every item not in it (unknown ids are ignored). All of
        it is one exclusion mask applied inside the kernel's scan. ``k < 1`` raises
        ``ValueError``.

        Thread-safe: the user's lock is held only to build the query and mask; the kernel runs
        without it, on the bundle the call started with (even if it is replaced meanwhile).
        """
        check_k(k)
        ranking = self.ranking(user=user, exclude_seen=exclude_seen, exclude=exclude, only=only)
        indices, scores = ranking.top(k)
        return ranking.ids(indices), scores

    def ranking(
        self,
        *,
        user: str = DEFAULT_USER,
        exclude_seen: bool = True,
        exclude: Iterable[str] = (),
        only: Iterable[str] | None = None,
    ) -> Ranking:
        """What :meth:`recommend` would rank, as a :class:`Ranking`: the query after demotion,
        the exclusion mask and the bundle; ``Ranking.scores()`` gives every item's score as the
        kernel orders them (used by ``pocketrec evaluate``). Thread-safe like ``recommend``."""
        excluded = check_ids(exclude, "exclude")
        allowed = None if only is None else check_ids(only, "only")
        state = self._user(user)
        with state.lock:
            served = self._attach(state)
            query = state.query(self._demotion)
            mask = state.exclusion(exclude_seen=bool(exclude_seen))
        mask = apply_call_filters(mask, served, excluded, allowed)
        return Ranking(query=query, exclude=mask, served=served, backend=self._backend)

    def user_vector(self, *, user: str = DEFAULT_USER) -> npt.NDArray[np.float32]:
        """float32 ``[D + 1]`` (a copy): the step model's user vector after ``user``'s last
        event, or the bundle's ``initial_user`` for a user without events (no demotion applied).
        Thread-safe."""
        state = self._user(user)
        with state.lock:
            self._attach(state)
            return state.user_vector()

    # ------------------------------------------------------------------ catalog and bundle

    def set_available(self, item_ids: Iterable[str], available: bool) -> None:
        """Mark catalog items available or not; unavailable items are never returned. Ids not in
        the catalog are remembered (they apply to a later bundle that has them).

        Thread-safe: the mask is replaced as a whole; calls already ranking keep the old one."""
        ids = check_ids(item_ids, "item_ids")
        with self._admin_lock:
            if available:
                self._unavailable_ids.difference_update(ids)
            else:
                self._unavailable_ids.update(ids)
            self._served.set_unavailable(self._unavailable_ids)

    def replace_bundle(self, new_dir: str | os.PathLike[str]) -> None:
        """Serve the bundle ``new_dir`` from now on (verified first; on error the old one stays).

        Calls in flight finish on the old bundle. Each user's state is then rebuilt by replaying
        their recent events (the last ``recent_events``) through the new step model; items the
        new catalog does not hold are skipped. Consumed and rejected items carry over by id.

        Thread-safe: other calls go on while the new bundle loads; a user's calls wait only while
        that user is rebuilt (a user reached before the rebuild loop is rebuilt by its own call).
        """
        served = ServedBundle(open_bundle(Path(new_dir)))
        with self._admin_lock:
            old = self._served
            served.set_unavailable(self._unavailable_ids)
            self._served = served
        logger.info(
            "bundle version %d (%s) replaced by version %d (%s)",
            old.manifest.model_version,
            old.bundle.path,
            served.manifest.model_version,
            served.bundle.path,
        )
        with self._users_lock:
            states = list(self._users.values())
        for state in states:
            with state.lock:
                self._attach(state)

    def info(self) -> dict[str, Any]:
        """What is serving: interpreter package, top-k backend, bundle path and version, item
        count, catalog and model dtypes, dimensions, users, settings. Thread-safe."""
        served = self._served
        m = served.manifest
        with self._users_lock:
            users = len(self._users)
        return {
            "interpreter": served.bundle.step.interpreter,
            "backend": self._backend,
            "bundle": str(served.bundle.path),
            "model_version": m.model_version,
            "items": m.num_items,
            "catalog_dtype": m.catalog_dtype,
            "model_dtype": m.model_dtype,
            "state_dim": m.state_dim,
            "user_dim": m.user_dim,
            "users": users,
            "unavailable": int(served.unavailable.sum()),
            "demotion": self._demotion,
            "feedback_decay": self._feedback_decay,
            "recent_events": self._recent_events,
        }

    def users(self) -> list[str]:
        """The users that have state (sorted). Thread-safe."""
        with self._users_lock:
            return sorted(self._users)

    # ------------------------------------------------------------------ internals

    def _user(self, user: str) -> UserState:
        if not isinstance(user, str) or not user:
            raise ValueError(f"user must be a non-empty str, got {user!r}")
        state = self._users.get(user)
        if state is None:
            with self._users_lock:
                state = self._users.setdefault(
                    user,
                    UserState(
                        recent_events=self._recent_events,
                        feedback=self._feedback_items,
                        decay=self._feedback_decay,
                    ),
                )
        return state

    def _attach(self, state: UserState) -> ServedBundle:
        """The bundle to serve ``state`` with (its lock held): rebuilt first if it changed."""
        served = self._served
        if state.served is not served:
            state.attach(served)
        return served


def _event_code(event: object) -> int:
    if isinstance(event, EventType):
        return int(event)
    if not isinstance(event, str):
        raise ValueError(
            f"event must be an event name or EventType, got {event!r}; expected one of "
            + ", ".join(EVENT_NAMES)
        )
    return event_code(event)


def _timestamp(ts: object) -> float:
    if ts is None:
        return time.time()
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            raise ValueError(f"ts must be timezone-aware, got the naive datetime {ts!r}")
        return ts.timestamp()
    if isinstance(ts, bool) or not isinstance(ts, int | float | np.integer | np.floating):
        raise ValueError(f"ts must be Unix seconds (a number) or a datetime, got {ts!r}")
    value = float(ts)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"ts must be a finite, non-negative Unix time in seconds, got {ts!r}")
    return value
