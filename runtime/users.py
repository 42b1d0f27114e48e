"""Per-user state: the step model's state and user vector, what the user consumed and rejected, the
negative-feedback directions, and a bounded buffer of recent events for replay.

The vectors and masks are expressed in the index space of one :class:`ServedBundle` (``served``);
:meth:`LiveUserState.attach` rebuilds them for another bundle by replaying the recent events through
its step model. Consumed and rejected items are also kept as external ids, so they survive a
bundle change in full (the vector is rebuilt from the last ``recent_events`` events only).
Dismissed items (``dismiss``, not withdrawn by a later positive event on the item) are also kept
apart: :meth:`LiveUserState.reset` forgets everything else but keeps them excluded ("never shown
again" survives a reset; a ``dislike`` is taste feedback and is forgotten with the history).
With a store, :meth:`LiveUserState.restore` rebuilds a user after a restart: the buffer and the
consumed/rejected items from the logged events (recorded exactly as
:meth:`LiveUserState.apply` did), the vectors from the saved state, or by replay when the state
belongs to another bundle.

Thread safety: a ``LiveUserState`` is not thread-safe by itself; every caller holds ``lock``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pocketrec.core.events import NEGATIVE_EVENTS, EventType
from pocketrec.runtime.feedback import (
    DEFAULT_CAPACITY,
    DEFAULT_DECAY,
    RejectedDirections,
    rejection_direction,
)
from pocketrec.runtime.serving import ServedBundle

_NEGATIVE_CODES = frozenset(int(e) for e in NEGATIVE_EVENTS)  # a set lookup: per-event path
_DISMISS = int(EventType.DISMISS)

Advance = tuple[int | None, npt.NDArray[np.float32] | None, npt.NDArray[np.float32] | None]
"""What one event does to a user's vectors: catalog index (``None``: unknown item), state, user
vector (see :meth:`LiveUserState.advance`)."""

DEFAULT_RECENT_EVENTS = 200
"""Events kept per user for replay when the bundle is replaced."""


@dataclass(frozen=True)
class ObservedEvent:
    """One event as observed: external item id, event code, Unix time (s), the app's context."""

    item_id: str
    event: int
    ts: float
    context: Mapping[str, Any] | None = None


class LiveUserState:
    """One user's in-memory state (see the module docstring); what the store keeps of it is a
    :class:`pocketrec.storage.SavedUserState`. Every method needs ``lock`` held."""

    def __init__(
        self,
        *,
        recent_events: int = DEFAULT_RECENT_EVENTS,
        feedback: int = DEFAULT_CAPACITY,
        decay: float = DEFAULT_DECAY,
    ) -> None:
        self.lock = threading.Lock()
        self.served: ServedBundle | None = None
        self.recent: deque[ObservedEvent] = deque(maxlen=recent_events)
        self.observed = 0  # events observed since the last reset, known items or not
        self._state: npt.NDArray[np.float32] | None = None  # [H]
        self._user: npt.NDArray[np.float32] | None = None  # [D + 1]; None: no known event yet
        self._seen_ids: set[str] = set()
        self._rejected_ids: dict[str, int] = {}  # -> event ordinal; insertion order = recency
        self._dismissed_ids: set[str] = set()  # dismissed and not withdrawn, resets included
        self._seen: npt.NDArray[np.bool_] | None = None  # [N], allocated on first known item
        self._rejected: npt.NDArray[np.bool_] | None = None
        self._directions = RejectedDirections(feedback, decay)

    def attach(self, served: ServedBundle) -> None:
        """Rebuild everything for ``served``: the recent events are replayed through its step
        model (items it does not hold are skipped) and the masks rebuilt from the ids."""
        self._replay(served)
        self.served = served
        self._seen = self._rejected = None
        if self._seen_ids or self._rejected_ids:
            seen, rejected = self._masks(served)
            seen[served.indices(self._seen_ids)] = True
            rejected[served.indices(self._rejected_ids)] = True
        self._mark_dismissed(served)
        self._directions.clear()
        capacity = self._directions.capacity
        for item_id in list(self._rejected_ids)[-capacity:] if capacity else ():
            index = served.index(item_id)
            if index is not None:
                direction = rejection_direction(served.item_row(index))
                self._directions.add(item_id, direction, self._rejected_ids[item_id])

    def apply(self, event: ObservedEvent) -> bool:
        """Apply one event (one step-model call); ``False`` when the catalog does not hold the
        item: then only the event buffer and the consumed/rejected ids change."""
        return self.commit(event, self.advance(event))

    def advance(self, event: ObservedEvent) -> Advance:
        """The step-model call of :meth:`apply` alone: the catalog index (``None``: unknown
        item) and the state and user vector after ``event``; changes nothing (see
        :meth:`commit`)."""
        served = self.served
        assert served is not None, "attach() first"
        index = served.index(event.item_id)
        if index is None:
            return None, self._state, self._user
        state = self._state if self._state is not None else served.initial_state()
        new_state, user = served.step_model().checked_step(index, event.event, state)
        return index, new_state, user

    def commit(self, event: ObservedEvent, advance: Advance) -> bool:
        """Make ``advance`` (from :meth:`advance` of ``event``) the user's state and record the
        event; returns whether the catalog holds the item."""
        index, self._state, self._user = advance
        self._record(event, index)
        return index is not None

    def saved(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
        """What the store keeps: the state ``[H]`` (zeros before any known event) and the
        user vector ``[D + 1]`` (``None`` before any known event)."""
        assert self.served is not None, "attach() first"
        state = self._state if self._state is not None else self.served.initial_state()
        return state, self._user

    def restore(
        self,
        served: ServedBundle,
        events: Sequence[ObservedEvent],
        *,
        event_count: int,
        saved: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None] | None,
        dismissed: Sequence[str] = (),
    ) -> None:
        """Rebuild a user from the store: ``events`` are the user's last logged events (the
        tail of the ``event_count`` observed since the last reset, oldest first). They refill
        the event buffer and the consumed/rejected items exactly as :meth:`apply` recorded them
        (same rejection ordinals, so the demotion resumes the same); the vectors are ``saved``
        (state ``[H]``, user vector or ``None``) when given, else the buffer is replayed
        through ``served``'s step model as in :meth:`attach`. ``dismissed``: item ids dismissed
        before the last reset (and not withdrawn since), kept excluded."""
        self.clear()
        self.served = served
        self.observed = max(event_count - len(events), 0)
        for event in events:
            self._record(event, served.index(event.item_id))
        self.observed = max(event_count, self.observed)
        self._dismissed_ids.update(dismissed)
        self._mark_dismissed(served)
        if saved is not None:
            self._state, self._user = saved
        else:
            self._replay(served)

    def _replay(self, served: ServedBundle) -> None:
        state, user = served.initial_state(), None
        model = served.step_model()
        for event in self.recent:
            index = served.index(event.item_id)
            if index is not None:
                state, user = model.checked_step(index, event.event, state)
        self._state, self._user = (state, user) if user is not None else (None, None)

    def _record(self, event: ObservedEvent, index: int | None) -> None:
        """Everything :meth:`apply` changes besides the vectors: the event buffer, the event
        count, the consumed/rejected ids and masks and the rejection directions."""
        self.recent.append(event)
        self.observed += 1
        negative = event.event in _NEGATIVE_CODES
        if negative:
            self._rejected_ids.pop(event.item_id, None)  # re-insert: most recent last
            self._rejected_ids[event.item_id] = self.observed
            if event.event == _DISMISS:
                self._dismissed_ids.add(event.item_id)
        else:
            self._seen_ids.add(event.item_id)
            self._rejected_ids.pop(event.item_id, None)  # engaging with it withdraws a rejection
            self._dismissed_ids.discard(event.item_id)  # and a dismissal, even an older one
        if index is None:
            return
        served = self.served
        assert served is not None
        seen, rejected = self._masks(served)
        if negative:
            rejected[index] = True
            direction = rejection_direction(served.item_row(index))
            self._directions.add(event.item_id, direction, self.observed)
        else:
            seen[index] = True
            rejected[index] = False
            self._directions.discard(event.item_id)

    def user_vector(self) -> npt.NDArray[np.float32]:
        """float32 ``[D + 1]`` (a copy): the step model's last output, or the bundle's
        ``initial_user`` before any known event."""
        assert self.served is not None, "attach() first"
        vector: npt.NDArray[np.float32] = (
            np.array(self.served.bundle.initial_user, dtype=np.float32)
            if self._user is None
            else self._user.copy()
        )
        return vector

    def query(self, demotion: float) -> npt.NDArray[np.float32]:
        """The user vector after negative-feedback demotion (``pocketrec.runtime.feedback``)."""
        return self._directions.apply(self.user_vector(), demotion, self.observed)

    def exclusion(self, *, exclude_seen: bool) -> npt.NDArray[np.bool_]:
        """A new bool ``[N]``: unavailable and rejected items, plus consumed ones if asked."""
        assert self.served is not None, "attach() first"
        mask: npt.NDArray[np.bool_] = self.served.unavailable.copy()
        if self._rejected is not None:
            np.logical_or(mask, self._rejected, out=mask)
        if exclude_seen and self._seen is not None:
            np.logical_or(mask, self._seen, out=mask)
        return mask

    def clear(self) -> None:
        """Forget everything, dismissals included (the user starts again from
        ``initial_user``)."""
        self._dismissed_ids.clear()
        self.reset()

    def reset(self) -> None:
        """Forget everything but the dismissed items, which stay excluded: the events, the
        vectors, the consumed and disliked items and the demotion."""
        self.recent.clear()
        self.observed = 0
        self._state = self._user = None
        self._seen_ids.clear()
        self._rejected_ids.clear()
        self._seen = self._rejected = None
        self._directions.clear()
        if self.served is not None:
            self._mark_dismissed(self.served)

    def _mark_dismissed(self, served: ServedBundle) -> None:
        """Set the dismissed items in the rejected mask of ``served``."""
        if self._dismissed_ids:
            _seen, rejected = self._masks(served)
            rejected[served.indices(self._dismissed_ids)] = True

    def _masks(self, served: ServedBundle) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """The consumed and rejected masks bool ``[N]``, allocated on first use."""
        if self._seen is None or self._rejected is None:
            self._seen = np.zeros(served.num_items, dtype=bool)
            self._rejected = np.zeros(served.num_items, dtype=bool)
        return self._seen, self._rejected
