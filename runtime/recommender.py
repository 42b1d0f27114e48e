"""``Recommender``: what an app embeds. Each event updates the user's interest vector with one call
of the bundle's TFLite step model (no history re-encoding), and the next ``recommend`` ranks the
memory-mapped catalog with that vector through the native top-k kernel at once.

Thread-safety design: one lock per user, held while that user's state is read or changed (an
``observe`` step, building a ranking's query and mask, ``reset``); the served bundle is one
reference swapped atomically by :meth:`Recommender.replace_bundle`, read under the user's lock, so
a user's state is never mixed from two bundles. The kernel runs outside the lock on the bundle
the call started with. Each thread gets its own TFLite interpreter (they are not thread-safe).

Persistence (``db=``, a :class:`pocketrec.storage.Store` or its path): every ``observe`` logs the
event and saves the user's state (state vector, user vector, the bundle's model version, the
event count since the last reset) in one store transaction, before the in-memory state changes,
so a failed write (``ValueError`` from the store's checks, ``StorageError``) changes nothing. A
user is restored on first use: the saved vectors when their model version is the bundle's (the
same interest vector, bit for bit), else rebuilt by replaying the user's last ``recent_events``
logged events through the current step model (and saved again). The event buffer and the
consumed/rejected items are always rebuilt from the log: the user's last ``event_count`` logged
events (those since the last reset), exactly as ``observe`` recorded them. Events that were not
logged (after ``Store.opt_out``, dropped by the outbox caps, erased, past retention) are missing
from that rebuild; the saved vectors are not affected.
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
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import numpy.typing as npt

from pocketrec.core.events import EVENT_NAMES, EventType, event_code
from pocketrec.core.ranking import select_topk
from pocketrec.native import registry
from pocketrec.native.arguments import check_k
from pocketrec.runtime.bundle import open_bundle
from pocketrec.runtime.bundle_choice import (
    REPLACED,
    SHIPPED,
    BundleChoice,
    open_best,
    record_served,
)
from pocketrec.runtime.feedback import DEFAULT_CAPACITY, DEFAULT_DECAY, DEFAULT_DEMOTION
from pocketrec.runtime.ranking import (
    Ranking,
    apply_call_filters,
    check_ids,
    recommendations,
    titled,
    top_batch,
)
from pocketrec.runtime.results import Recommendations, TitledRecommendations
from pocketrec.runtime.serving import ServedBundle
from pocketrec.runtime.similar import cosine_scores
from pocketrec.runtime.users import DEFAULT_RECENT_EVENTS, Advance, LiveUserState, ObservedEvent

if TYPE_CHECKING:
    from pocketrec.runtime.sync import BackgroundSync, SyncReport
    from pocketrec.storage import Store

logger = logging.getLogger("pocketrec.runtime")

DEFAULT_USER = "default"


class Recommender:
    """Real-time, per-event personalization on the device (make one with :meth:`open`).

    Several users (profiles) share one bundle; each has its own state. Item ids are the external
    string ids of the bundle's ``items.json``. Events: ``view``, ``click``, ``purchase``,
    ``like`` (positive: the item counts as consumed) and ``dislike``, ``dismiss`` (negative
    feedback: the item is never returned again; with ``demotion > 0`` similar items are demoted
    at once, see ``pocketrec.runtime.feedback``). Every event also goes through the step model,
    as in training.
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
        store: Store | None = None,
        owns_store: bool = False,
        choice: BundleChoice | None = None,
    ) -> None:
        """Prefer :meth:`open`. ``served``: the bundle to serve; ``store``: the device store
        (closed by :meth:`close` when ``owns_store``); ``choice``: why that bundle (for
        :meth:`info`); see ``open`` for the rest."""
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
        self._users: dict[str, LiveUserState] = {}
        self._users_lock = threading.Lock()  # guards the dict (creating a user)
        self._admin_lock = threading.Lock()  # serialises replace_bundle and set_available
        self._sync_lock = threading.Lock()  # one sync pass at a time
        self._store = store
        self._owns_store = owns_store
        self._choice = choice or BundleChoice(
            str(served.bundle.path), served.manifest.model_version, SHIPPED, "opened directly"
        )
        if store is not None:
            self._unavailable_ids.update(store.unavailable_items())
            served.set_unavailable(self._unavailable_ids)

    @classmethod
    def open(
        cls,
        bundle_dir: str | os.PathLike[str] | None,
        db: str | os.PathLike[str] | Store | None = None,
        backend: str = "auto",
        *,
        demotion: float = DEFAULT_DEMOTION,
        recent_events: int = DEFAULT_RECENT_EVENTS,
        feedback_items: int = DEFAULT_CAPACITY,
        feedback_decay: float = DEFAULT_DECAY,
    ) -> Recommender:
        """Open the bundle to serve: ``bundle_dir``, or with a ``db`` the best bundle installed.

        Every bundle is verified and exercised before it is served
        (:func:`pocketrec.runtime.bundle.open_bundle`: each file's length and SHA-256, then the
        interpreter, the dimensions, one step and one top-k; ``BundleError`` naming the file
        otherwise). The catalog is memory-mapped.

        Args:
            bundle_dir: the bundle the app ships with (written by ``pocketrec convert``). With a
                ``db`` it is the fallback: the store's active bundle (the last update that sync
                or :meth:`replace_bundle` installed) is served instead unless the shipped one is
                newer, and an installed bundle that fails to open is recorded as failed and
                skipped for the previous good one or the shipped one
                (``pocketrec.runtime.bundle_choice``; :meth:`info` says which and why). ``None``
                (only with a ``db``): no shipped bundle, an installed one must open.
            db: the device store that keeps the users' state and installed bundles across
                restarts (module docstring): a path (a :class:`pocketrec.storage.Store` is
                opened with its defaults, durability ``"full"``, and closed by :meth:`close`)
                or an open ``Store`` (shared: the caller closes it, after this recommender).
                The items its catalog cache marks unavailable start unavailable. ``None``:
                state lives in memory only.
            backend: top-k backend, ``"auto"``, ``"c"``, ``"numba"`` or ``"numpy"``.
            demotion: ``λ`` of the negative-feedback demotion; 0 (the default, chosen on
                MovieLens 100K: ``pocketrec.runtime.feedback``) switches it off.
            recent_events: events kept per user to rebuild its state on :meth:`replace_bundle`.
            feedback_items: how many recent rejections per user demote similar items.
            feedback_decay: a rejection's demotion is multiplied by this for every later event.
        """
        shipped = None if bundle_dir is None else Path(bundle_dir)
        store, owns = _open_store(db)
        try:
            if store is None:
                if shipped is None:
                    raise ValueError("bundle_dir is required without a db")
                bundle, choice = open_bundle(shipped), None
            else:
                bundle, choice = open_best(shipped, store)
            served = ServedBundle(bundle)
            return cls(
                served,
                backend=backend,
                demotion=demotion,
                recent_events=recent_events,
                feedback_items=feedback_items,
                feedback_decay=feedback_decay,
                store=store,
                owns_store=owns,
                choice=choice,
            )
        except BaseException:
            if owns and store is not None:
                store.close()
            raise

    def close(self) -> None:
        """Close the store if this recommender opened it from a path (a ``Store`` passed in is
        left open); the in-memory state stays readable. Call it once no other thread uses the
        recommender; closing twice is a no-op."""
        if self._store is not None and self._owns_store:
            self._store.close()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

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

        With a db, the event is appended to the store's log (nothing is logged after
        ``Store.opt_out``; the store's checks still apply: ids of at most 512 bytes, ``ts``
        before the year 3000, a JSON ``context`` of at most 32 KiB) and the user's state is
        saved, in one transaction; if it fails (``ValueError``, ``StorageError``) the user's
        state is unchanged.

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
            served = self._attach(state, user)
            if self._store is None:
                known = state.apply(record)
            else:
                advance = state.advance(record)
                self._log_and_save(user, record, advance, state.observed + 1, served)
                known = state.commit(record, advance)
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
        """Start ``user``'s recommendations afresh: the interest vector goes back to the
        bundle's ``initial_user``, and the events, consumed items, disliked items and demotion
        are forgotten. **Dismissed items stay excluded**: a ``dismiss`` means "never show this
        again", which a user still expects after "reset my recommendations" (a ``dislike`` is
        taste feedback and goes with the history). A later positive event on a dismissed item
        withdraws its dismissal; ``Store.erase_user`` (a data request) forgets everything.

        With a db, the saved state is deleted too; the logged events stay in the log (they are
        the outbox) and only their dismissals are used to restore the user after a restart.
        Thread-safe: waits for the user's calls in progress."""
        state = self._user(user)
        with state.lock:
            if self._store is not None:
                self._store.delete_state(user)
            state.reset()

    def _discard(self, user: str) -> None:
        """Drop ``user``'s in-memory state entirely, dismissals included (``pocketrec evaluate``
        starts each held-out user from nothing). Without a db only; not thread-safe against
        calls for the same user."""
        if self._store is not None:
            raise ValueError("_discard is for recommenders without a db")
        with self._users_lock:
            self._users.pop(user, None)

    # ------------------------------------------------------------------ ranking

    @overload
    def recommend(
        self,
        k: int = ...,
        *,
        user: str = ...,
        exclude_seen: bool = ...,
        exclude: Iterable[str] = ...,
        only: Iterable[str] | None = ...,
        titles: Literal[False] = ...,
    ) -> Recommendations: ...

    @overload
    def recommend(
        self,
        k: int = ...,
        *,
        user: str = ...,
        exclude_seen: bool = ...,
        exclude: Iterable[str] = ...,
        only: Iterable[str] | None = ...,
        titles: Literal[True],
    ) -> TitledRecommendations: ...

    def recommend(
        self,
        k: int = 10,
        *,
        user: str = DEFAULT_USER,
        exclude_seen: bool = True,
        exclude: Iterable[str] = (),
        only: Iterable[str] | None = None,
        titles: bool = False,
    ) -> Recommendations | TitledRecommendations:
        """The ``k`` best items for ``user``: a :class:`Recommendations` ``(ids, scores)`` —
        external ids (list of str) and float32 scores (the demoted user vector's inner product
        with each catalog row, or the int8 score), best first; fewer when fewer items are
        eligible. ``titles=True``: a :class:`TitledRecommendations` with the items' titles too
        (:class:`TitlesUnavailableError` if the bundle has none).

        Never returned: unavailable items (:meth:`set_available`), items the user rejected
        (``dislike``/``dismiss``; dismissed items even after :meth:`reset`), consumed items
        (positive events) when ``exclude_seen``, ``exclude`` ids, and with ``only`` every item
        not in it (unknown ids are ignored). All of it is one exclusion mask applied inside the
        kernel's scan. ``k < 1`` raises ``ValueError``.

        Thread-safe: the user's lock is held only to build the query and mask; the kernel runs
        without it, on the bundle the call started with (even if it is replaced meanwhile).
        """
        check_k(k)
        ranking = self.ranking(user=user, exclude_seen=exclude_seen, exclude=exclude, only=only)
        result = recommendations(ranking.served, *ranking.top(k))
        return titled(ranking.served, result) if titles else result

    @overload
    def recommend_batch(
        self,
        users: Iterable[str],
        k: int = ...,
        *,
        exclude_seen: bool = ...,
        exclude: Iterable[str] = ...,
        only: Iterable[str] | None = ...,
        titles: Literal[False] = ...,
    ) -> list[Recommendations]: ...

    @overload
    def recommend_batch(
        self,
        users: Iterable[str],
        k: int = ...,
        *,
        exclude_seen: bool = ...,
        exclude: Iterable[str] = ...,
        only: Iterable[str] | None = ...,
        titles: Literal[True],
    ) -> list[TitledRecommendations]: ...

    def recommend_batch(
        self,
        users: Iterable[str],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        exclude: Iterable[str] = (),
        only: Iterable[str] | None = None,
        titles: bool = False,
    ) -> list[Recommendations] | list[TitledRecommendations]:
        """:meth:`recommend` for each of ``users`` (a collection of user ids; repeats allowed),
        in one pass over the catalog with the kernel's batch call (several passes only past
        ``pocketrec.runtime.ranking.BATCH_MASK_BYTES`` of masks, e.g. 32 MiB = 2,700 users of a
        12,000-item catalog). Returns one result per user, in order, each what
        ``recommend(k, user=u, …)`` would return at that moment: every user's own demotion,
        rejected, consumed and unavailable items; ``exclude`` and ``only`` apply to every user.
        An int8 catalog gives identical results; a float32 one may differ in the last bit of a
        score (a backend may sum a batch in another order, as the numpy reference's BLAS does),
        and so order two items differently only when their scores are that close.
        A lone str is refused (``ValueError``): pass ``[user]``.

        Thread-safe like ``recommend``: each user's lock is held only while their query and
        mask are built."""
        check_k(k)
        names = check_ids(users, "users", "user ids")
        excluded = check_ids(exclude, "exclude")
        allowed = None if only is None else check_ids(only, "only")
        rankings = [self._ranking(name, bool(exclude_seen), excluded, allowed) for name in names]
        groups: dict[int, list[int]] = {}  # by bundle: replace_bundle may run meanwhile
        for position, ranking in enumerate(rankings):
            groups.setdefault(id(ranking.served), []).append(position)
        found: dict[int, Recommendations] = {}
        for positions in groups.values():
            tops = top_batch([rankings[p] for p in positions], k)
            for p, (indices, scores) in zip(positions, tops, strict=True):
                found[p] = recommendations(rankings[p].served, indices, scores)
        results = [found[p] for p in range(len(rankings))]
        if titles:
            return [titled(ranking.served, r) for ranking, r in zip(rankings, results, strict=True)]
        return results

    @overload
    def similar_items(
        self,
        item_id: str,
        k: int = ...,
        *,
        user: str | None = ...,
        exclude_seen: bool = ...,
        exclude: Iterable[str] = ...,
        only: Iterable[str] | None = ...,
        titles: Literal[False] = ...,
    ) -> Recommendations: ...

    @overload
    def similar_items(
        self,
        item_id: str,
        k: int = ...,
        *,
        user: str | None = ...,
        exclude_seen: bool = ...,
        exclude: Iterable[str] = ...,
        only: Iterable[str] | None = ...,
        titles: Literal[True],
    ) -> TitledRecommendations: ...

    def similar_items(
        self,
        item_id: str,
        k: int = 10,
        *,
        user: str | None = None,
        exclude_seen: bool = True,
        exclude: Iterable[str] = (),
        only: Iterable[str] | None = None,
        titles: bool = False,
    ) -> Recommendations | TitledRecommendations:
        """The ``k`` catalog items most similar to ``item_id``, by the **cosine** of their
        embeddings (float32 scores in [-1, 1], best first, equal scores by lower index; the
        item bias is left out; see ``pocketrec.runtime.similar``), float32 and int8 catalogs
        alike. The item itself is never returned, nor are unavailable items, ``exclude`` ids
        and, with ``only``, items outside it; with a ``user``, that user's rejected items and
        (``exclude_seen``) consumed items too, as in :meth:`recommend` (no demotion: the
        ranking is not personal). An id the catalog does not hold raises ``ValueError``; an
        item whose embedding is all zero has no direction and gets an empty result.

        One pass over the catalog (numpy, ``O(N·D)``). Thread-safe."""
        check_k(k)
        if not isinstance(item_id, str):
            raise ValueError(f"item_id must be a str, got {item_id!r}")
        excluded = check_ids(exclude, "exclude")
        allowed = None if only is None else check_ids(only, "only")
        if user is None:
            served = self._served
            mask = served.unavailable.copy()
        else:
            state = self._user(user)
            with state.lock:
                served = self._attach(state, user)
                mask = state.exclusion(exclude_seen=bool(exclude_seen))
        index = served.index(item_id)
        if index is None:
            raise ValueError(
                f"item {item_id!r} is not in the catalog of bundle version "
                f"{served.manifest.model_version}"
            )
        mask = apply_call_filters(mask, served, excluded, allowed)
        mask[index] = True
        scores = cosine_scores(served.catalog, index, served.inverse_norms())
        indices, top = select_topk(scores, ~mask, k)
        result = recommendations(served, indices, top.astype(np.float32, copy=False))
        return titled(served, result) if titles else result

    def title(self, item_id: str) -> str | None:
        """The title of ``item_id`` from the bundle's ``item_titles.json`` (``None`` for an
        item the file gives no title). :class:`TitlesUnavailableError` when the bundle has no
        titles (``info()["titles"]`` says whether it has), ``ValueError`` for an id the catalog
        does not hold. Thread-safe."""
        if not isinstance(item_id, str):
            raise ValueError(f"item_id must be a str, got {item_id!r}")
        served = self._served
        index = served.index(item_id)
        if index is None:
            raise ValueError(
                f"item {item_id!r} is not in the catalog of bundle version "
                f"{served.manifest.model_version}"
            )
        return served.titles([index])[0]

    def ranking(
        self,
        *,
        user: str = DEFAULT_USER,
        exclude_seen: bool = True,
        exclude: Iterable[str] = (),
        only: Iterable[str] | None = None,
    ) -> Ranking:
        """What :meth:`recommend` would rank, as a :class:`Ranking` (README, "Embedding the
        runtime"): ``query`` float32 ``[D + 1]`` (the user vector after demotion), ``exclude``
        bool ``[N]`` (True: never returned) and the bundle; ``Ranking.scores()`` gives every
        item's score float32 ``[N]`` as the kernel orders them, ``Ranking.top(k)`` catalog
        indices and scores (used by ``pocketrec evaluate``). Thread-safe like ``recommend``."""
        excluded = check_ids(exclude, "exclude")
        allowed = None if only is None else check_ids(only, "only")
        return self._ranking(user, bool(exclude_seen), excluded, allowed)

    def _ranking(
        self, user: str, exclude_seen: bool, excluded: list[str], allowed: list[str] | None
    ) -> Ranking:
        """:meth:`ranking` with the filters already checked."""
        state = self._user(user)
        with state.lock:
            served = self._attach(state, user)
            query = state.query(self._demotion)
            mask = state.exclusion(exclude_seen=exclude_seen)
        mask = apply_call_filters(mask, served, excluded, allowed)
        return Ranking(query=query, exclude=mask, served=served, backend=self._backend)

    def user_vector(self, *, user: str = DEFAULT_USER) -> npt.NDArray[np.float32]:
        """float32 ``[D + 1]`` (a copy): the step model's user vector after ``user``'s last
        event, or the bundle's ``initial_user`` for a user without events (no demotion applied).
        Thread-safe."""
        state = self._user(user)
        with state.lock:
            self._attach(state, user)
            return state.user_vector()

    # ------------------------------------------------------------------ catalog and bundle

    def set_available(self, item_ids: Iterable[str], available: bool) -> None:
        """Mark catalog items available or not; unavailable items are never returned. Ids not in
        the catalog are remembered (they apply to a later bundle that has them). With a db, the
        marks are written to the store's catalog cache first (``Store.set_available``), so they
        survive a restart.

        Thread-safe: the mask is replaced as a whole; calls already ranking keep the old one."""
        ids = check_ids(item_ids, "item_ids")
        with self._admin_lock:
            if self._store is not None:
                self._store.set_available(sorted(ids), bool(available))
            if available:
                self._unavailable_ids.difference_update(ids)
            else:
                self._unavailable_ids.update(ids)
            self._served.set_unavailable(self._unavailable_ids)

    def replace_bundle(self, new_dir: str | os.PathLike[str]) -> None:
        """Serve the bundle ``new_dir`` from now on. It is verified and exercised first
        (:func:`pocketrec.runtime.bundle.open_bundle`); on error (``BundleError``) nothing
        changes. With a db it is then recorded as the store's active bundle, so a restart
        serves it too (``BundleError`` if the store holds its model version from another
        manifest or as failed).

        Calls in flight finish on the old bundle. Each user's state is then rebuilt by replaying
        their recent events (the last ``recent_events``) through the new step model; items the
        new catalog does not hold are skipped. Consumed and rejected items carry over by id.
        With a db, each rebuilt state is saved with the new model version (users not loaded in
        this process are rebuilt from the log when first used).

        Thread-safe: other calls go on while the new bundle loads; a user's calls wait only while
        that user is rebuilt (a user reached before the rebuild loop is rebuilt by its own call).
        """
        bundle = open_bundle(Path(new_dir))
        served = ServedBundle(bundle)
        with self._admin_lock:
            if self._store is not None:
                record_served(self._store, bundle)
            old = self._served
            served.set_unavailable(self._unavailable_ids)
            self._served = served
            self._choice = BundleChoice(
                str(bundle.path), bundle.manifest.model_version, REPLACED, "replace_bundle"
            )
        logger.info(
            "bundle version %d (%s) replaced by version %d (%s)",
            old.manifest.model_version,
            old.bundle.path,
            served.manifest.model_version,
            served.bundle.path,
        )
        with self._users_lock:
            states = list(self._users.items())
        for user, state in states:
            with state.lock:
                self._attach(state, user)

    # ------------------------------------------------------------------ sync

    def sync(
        self,
        url: str,
        token: str,
        *,
        public_key: bytes | str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> SyncReport:
        """One sync pass with the server ``url`` (needs a db): upload the pending events, then,
        with a ``public_key``, install a newer signed bundle and serve it
        (:meth:`replace_bundle`); the previous bundle stays installed for a rollback.

        Never raises for the network or the server: the report says what happened (offline,
        refused token, rejected bundle) and unacknowledged events stay pending. ``options`` go
        to :class:`pocketrec.runtime.sync.SyncClient` (``bundles_dir``, ``timeout``,
        ``policy``, ``sleep``, ``clock``, ``rng``, ``batch_events``, ``batch_bytes``,
        ``chunk_bytes``, ``progress``, ``allow_http``). ``url`` must be ``https://`` unless it
        is a loopback host or ``allow_http=True``. Runs on the calling thread; ``observe`` and
        ``recommend`` go on meanwhile (they never wait for the network). One pass at a time.
        """
        from pocketrec.runtime.sync import SyncClient

        if self._store is None:
            raise ValueError("sync needs a device store: open the Recommender with db=...")
        client = SyncClient(self._store, url, token, public_key=public_key, **options)
        with self._sync_lock:
            version = self._served.manifest.model_version
            return client.run(current_version=version, on_bundle=self.replace_bundle)

    def start_sync(
        self,
        url: str,
        token: str,
        *,
        interval: float = 300.0,
        jitter: float = 0.1,
        run_first: bool = True,
        public_key: bytes | str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> BackgroundSync:
        """Run :meth:`sync` in a daemon thread every ``interval`` seconds ± ``jitter`` (a
        fraction); returns the started :class:`pocketrec.runtime.sync.BackgroundSync` (call
        ``stop()`` before :meth:`close`)."""
        from pocketrec.runtime.sync import BackgroundSync, SyncClient

        if self._store is None:
            raise ValueError("sync needs a device store: open the Recommender with db=...")
        client = SyncClient(self._store, url, token, public_key=public_key, **options)

        def run() -> SyncReport:
            with self._sync_lock:
                version = self._served.manifest.model_version
                return client.run(current_version=version, on_bundle=self.replace_bundle)

        return BackgroundSync(run, interval=interval, jitter=jitter, run_first=run_first).start()

    def info(self) -> dict[str, Any]:
        """What is serving: interpreter package, top-k backend (and its C code path,
        ``topk_isa``, None for other backends), bundle path and version, which
        bundle was chosen and why (``bundle_choice``: source, reason, candidates skipped), item
        count, catalog and model dtypes, dimensions, users, settings. Thread-safe."""
        served = self._served
        m = served.manifest
        with self._users_lock:
            users = len(self._users)
        return {
            "interpreter": served.bundle.step.interpreter,
            "backend": self._backend,
            "topk_isa": _topk_isa(self._backend),
            "bundle": str(served.bundle.path),
            "model_version": m.model_version,
            "bundle_choice": self._choice.to_dict(),
            "items": m.num_items,
            "titles": served.bundle.titles is not None,
            "catalog_dtype": m.catalog_dtype,
            "model_dtype": m.model_dtype,
            "state_dim": m.state_dim,
            "user_dim": m.user_dim,
            "users": users,
            "unavailable": int(served.unavailable.sum()),
            "demotion": self._demotion,
            "feedback_decay": self._feedback_decay,
            "recent_events": self._recent_events,
            "db": None if self._store is None else str(self._store.path),
            "durability": None if self._store is None else self._store.durability,
        }

    def users(self) -> list[str]:
        """The users that have state (sorted). Thread-safe."""
        with self._users_lock:
            return sorted(self._users)

    # ------------------------------------------------------------------ internals

    def _user(self, user: str) -> LiveUserState:
        if not isinstance(user, str) or not user:
            raise ValueError(f"user must be a non-empty str, got {user!r}")
        state = self._users.get(user)
        if state is None:
            with self._users_lock:
                state = self._users.setdefault(
                    user,
                    LiveUserState(
                        recent_events=self._recent_events,
                        feedback=self._feedback_items,
                        decay=self._feedback_decay,
                    ),
                )
        return state

    def _attach(self, state: LiveUserState, user: str) -> ServedBundle:
        """The bundle to serve ``state`` with (its lock held): rebuilt first if it changed; on
        first use restored from the store."""
        served = self._served
        if state.served is not served:
            if self._store is None:
                state.attach(served)
            elif state.served is None:
                self._restore(state, user, served)
            else:
                state.attach(served)
                self._save_rebuilt(state, user, served)
        return served

    def _restore(self, state: LiveUserState, user: str, served: ServedBundle) -> None:
        """Load ``user`` from the store (see the module docstring); nothing changes if a read
        fails."""
        store = self._store
        assert store is not None
        saved = store.load_state(user)
        dismissed = store.dismissed_items(user)  # kept across resets: reset() says why
        if saved is None:
            state.restore(served, (), event_count=0, saved=None, dismissed=dismissed)
            return
        logged = store.recent_events(user, saved.event_count)
        events = [
            ObservedEvent(e.item_id, e.event_code, e.timestamp, e.context)
            for e in logged
            if 0 <= e.event_code < len(EVENT_NAMES)  # a code from a newer build: skipped
        ]
        m = served.manifest
        vectors = None
        if saved.model_version == m.model_version and saved.state.shape == (m.state_dim,):
            user_vector = saved.user_vector
            if user_vector is None or user_vector.shape == (m.user_dim,):
                vectors = (saved.state, user_vector)
        state.restore(
            served, events, event_count=saved.event_count, saved=vectors, dismissed=dismissed
        )
        if vectors is None:
            logger.info(
                "user %r: saved state of model version %d rebuilt for version %d from %d "
                "logged events",
                user,
                saved.model_version,
                m.model_version,
                len(state.recent),
            )
            self._save_rebuilt(state, user, served)

    def _save_rebuilt(self, state: LiveUserState, user: str, served: ServedBundle) -> None:
        """Save a state rebuilt for ``served``. A failure is logged, not raised: the saved state
        keeps its old model version and is rebuilt from the log again on the next restore."""
        store = self._store
        assert store is not None
        vector, user_vector = state.saved()
        try:
            store.save_state(
                user,
                vector,
                model_version=served.manifest.model_version,
                event_count=state.observed,
                user_vector=user_vector,
            )
        except Exception:
            logger.warning("user %r: could not save the rebuilt state", user, exc_info=True)

    def _log_and_save(
        self,
        user: str,
        record: ObservedEvent,
        advance: Advance,
        event_count: int,
        served: ServedBundle,
    ) -> None:
        """Append ``record`` to the store's log and save the state after it, in one
        transaction (the store logs nothing after ``opt_out``)."""
        store = self._store
        assert store is not None
        _index, vector, user_vector = advance
        if vector is None:
            vector = served.initial_state()
        with store.transaction():
            store.append(
                user, record.item_id, record.event, timestamp=record.ts, context=record.context
            )
            store.save_state(
                user,
                vector,
                model_version=served.manifest.model_version,
                event_count=event_count,
                user_vector=user_vector,
            )


def _topk_isa(backend: str) -> dict[str, str] | None:
    """The C kernels' code path per kind the runtime uses (see ``c_backend.isa_report``); None
    for other backends."""
    if backend != "c":
        return None
    from pocketrec.native import c_backend

    return c_backend.isa_report(c_backend.RUNTIME_KINDS)


def _open_store(db: object) -> tuple[Store | None, bool]:
    """The store for ``db`` (``None``, a path or a ``Store``) and whether it was opened here."""
    if db is None:
        return None, False
    from pocketrec.storage import Store  # imported only when a db is used (sqlite-utils)

    if isinstance(db, Store):
        if db.closed:
            raise ValueError(f"db is a closed store: {db!r}")
        return db, False
    if isinstance(db, str | os.PathLike):
        return Store.open(db), True
    raise ValueError(f"db must be a path, a pocketrec.storage.Store or None, got {db!r}")


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
