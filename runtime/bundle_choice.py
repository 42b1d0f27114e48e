"""Which bundle an app serves at start: the installed one it last switched to, a newer bundle the
app shipped with, or the previous good one — never a bundle that fails to open.

``open_best(shipped, store)`` tries, in order:

1. the store's *active* bundle (the last one sync or ``replace_bundle`` switched to), unless the
   app ships a newer one (an app update): then the shipped bundle first;
2. every other candidate, newest model version first: the store's other good bundles and the
   shipped one.

Each candidate is opened with :func:`pocketrec.runtime.bundle.open_bundle`, which verifies and
exercises it. An installed bundle that fails (its folder deleted, a file corrupted on disk, a
model this runtime can no longer run) is recorded as failed in the store with the reason, so it
is not tried again and sync does not fetch that version again; the next candidate is tried. The
store's active mark then follows what is served (none when the shipped bundle is). The returned
:class:`BundleChoice` says which bundle and why (``Recommender.info()["bundle_choice"]``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pocketrec.core.bundle import manifest_sha256, read_manifest
from pocketrec.core.errors import BundleError
from pocketrec.runtime.bundle import Bundle, open_bundle

if TYPE_CHECKING:
    from pocketrec.storage import BundleRecord, Store

SHIPPED = "shipped"
INSTALLED = "installed"
REPLACED = "replaced"


@dataclass(frozen=True)
class Skipped:
    """A candidate that was not served: its folder, model version (``None`` if unreadable) and
    why."""

    path: str
    model_version: int | None
    reason: str


@dataclass(frozen=True)
class BundleChoice:
    """The bundle being served: its folder, model version, ``source`` (``"installed"``: from the
    store; ``"shipped"``: the folder the app passed; ``"replaced"``: ``replace_bundle``), why it
    was chosen, and the candidates skipped on the way."""

    path: str
    model_version: int
    source: str
    reason: str
    skipped: tuple[Skipped, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (for ``Recommender.info()``)."""
        return asdict(self)


@dataclass(frozen=True)
class _Candidate:
    path: Path
    model_version: int | None
    record: BundleRecord | None  # None: the shipped bundle


def open_best(shipped: Path | None, store: Store) -> tuple[Bundle, BundleChoice]:
    """Open the bundle to serve (module docstring). Raises :class:`BundleError` listing every
    candidate's failure when none opens (or when there is none)."""
    candidates = _ordered(shipped, store)
    skipped: list[Skipped] = []
    for candidate in candidates:
        try:
            bundle = open_bundle(candidate.path)
        except BundleError as exc:
            skipped.append(Skipped(str(candidate.path), candidate.model_version, str(exc)))
            if candidate.record is not None:
                record = candidate.record
                store.mark_bundle_failed(
                    record.model_version, record.path, record.sha256, reason=str(exc)
                )
            continue
        _follow(store, candidate.record)
        return bundle, _choice(candidate, bundle, candidates[0], skipped)
    if not candidates:
        raise BundleError(f"no bundle to open: nothing installed in {store.path} and none shipped")
    problems = "; ".join(f"{s.path}: {s.reason}" for s in skipped)
    raise BundleError(f"no bundle could be opened ({problems})")


def record_served(store: Store, bundle: Bundle) -> None:
    """Record ``bundle`` (just proven by ``open_bundle``) as installed, good and active, so a
    restart serves it. Raises :class:`BundleError` when the store holds that model version from
    another manifest, or as failed."""
    version = bundle.manifest.model_version
    try:
        store.add_bundle(version, bundle.path.resolve(), manifest_sha256(bundle.path))
    except ValueError as exc:
        raise BundleError(f"{bundle.path}: {exc}") from None
    store.activate_bundle(version)


def _ordered(shipped: Path | None, store: Store) -> list[_Candidate]:
    records = [record for record in store.installed_bundles() if record.good]
    candidates = [_Candidate(Path(r.path), r.model_version, r) for r in records]
    if shipped is not None:
        candidates.append(_Candidate(shipped, _version_of(shipped), None))

    def version(candidate: _Candidate) -> int:
        return -1 if candidate.model_version is None else candidate.model_version

    candidates.sort(key=version, reverse=True)  # stable: an installed bundle before a shipped one
    active = next((c for c in candidates if c.record is not None and c.record.active), None)
    first = active
    shipped_first = next((c for c in candidates if c.record is None), None)
    if active is None or (shipped_first is not None and version(shipped_first) > version(active)):
        first = candidates[0] if candidates else None
    if first is not None:
        candidates.remove(first)
        candidates.insert(0, first)
    return candidates


def _version_of(path: Path) -> int | None:
    try:
        return read_manifest(path).model_version
    except BundleError:
        return None


def _follow(store: Store, record: BundleRecord | None) -> None:
    """Make the store's active mark name what is served (none for the shipped bundle)."""
    active = store.active_bundle()
    wanted = None if record is None else record.model_version
    if (None if active is None else active.model_version) != wanted:
        store.activate_bundle(wanted)


def _choice(
    served: _Candidate, bundle: Bundle, first: _Candidate, skipped: list[Skipped]
) -> BundleChoice:
    version = bundle.manifest.model_version
    source = SHIPPED if served.record is None else INSTALLED
    if served is not first:
        reason = f"v{version} ({source}): the preferred bundles failed to open"
    elif served.record is None:
        reason = f"v{version} (shipped): no installed bundle is active and newer"
    else:
        reason = f"v{version} (installed): the active bundle"
    return BundleChoice(str(bundle.path), version, source, reason, tuple(skipped))
