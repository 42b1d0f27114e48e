"""Pulling a newer bundle: signed manifest → resumable download → verify → prove → switch.

1. ``GET /v1/bundles/latest``: the manifest's exact bytes and their Ed25519 signature. The
   signature must verify against the configured public key, then the manifest must parse, its
   ``model_version`` must be greater than every installed good version and the one being served
   (no rollback) and the server's advertised version must equal it; otherwise ``"rejected"``
   and nothing is written but the staging directory. A version the store recorded as failed is
   answered ``"failed_before"`` without downloading anything (never retried in a loop).
2. Every listed file is downloaded into ``<bundles_dir>/.incoming-v<N>/`` (``<name>.part``,
   resumed with ``Range`` after a crash or a dropped connection, never read past its signed
   length), then its length and SHA-256 are checked against the signed manifest. A mismatch
   deletes the file and rejects the bundle.
3. The staged bundle is proven where it lies: ``verify_bundle``, then ``open_bundle`` (the
   interpreter, the dimensions, one step and one top-k). A failure records the version as failed
   in the store with the reason (``Store.mark_bundle_failed``), deletes the staging directory and
   rejects the bundle: the active bundle is untouched.
4. Only then: fsync, rename to ``<bundles_dir>/v<N>`` (``pocketrec.core.files``), and one store
   transaction records it good and active (``Store.add_bundle(..., activate=True)``).

A crash anywhere leaves the store's active bundle either the old complete directory or the new
complete, proven one: the rename happens only after the proof and the record only after the
rename (a directory renamed but not recorded is verified and proven again on the next pass).
Older bundle directories are kept (rollback with ``Store.activate_bundle``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pocketrec.core.bundle import MANIFEST, Manifest, read_manifest, sha256_file, verify_bundle
from pocketrec.core.errors import BundleError, BundleRejectedError, SyncAuthError, SyncError
from pocketrec.core.files import install_directory
from pocketrec.core.wire import DOWNLOAD_CHUNK_BYTES
from pocketrec.runtime.bundle import open_bundle
from pocketrec.runtime.sync.http import HttpClient, file_path
from pocketrec.runtime.sync.policy import Retrier
from pocketrec.runtime.sync.signature import verify_signature
from pocketrec.storage import Store

LATEST_PATH = "/v1/bundles/latest"
MAX_MANIFEST_BYTES = 1 << 20

Progress = Callable[[str, int], None]
"""``progress(stage, amount)``: ``("download:<file>", bytes so far)``, ``("verified", N)``,
``("proven", N)``, ``("renamed", N)``, ``("recorded", N)`` with ``N`` the model version."""


@dataclass(frozen=True)
class BundleUpdate:
    """The outcome of a bundle check.

    ``status``: ``"installed"`` (``path`` holds the new active bundle), ``"up_to_date"``,
    ``"none_published"``, ``"rejected"`` (``reason`` says why; nothing was activated) or
    ``"failed_before"`` (the server's latest is a version this device recorded as failed:
    ``reason`` is the recorded failure; nothing was downloaded).
    """

    status: str
    model_version: int | None = None
    path: Path | None = None
    reason: str = ""


def installed_version(store: Store, current: int | None = None) -> int | None:
    """The highest good model version installed in ``store`` (or ``current``, the running
    one)."""
    versions = [record.model_version for record in store.installed_bundles() if record.good]
    if current is not None:
        versions.append(current)
    return max(versions) if versions else None


def update_bundle(
    store: Store,
    client: HttpClient,
    retrier: Retrier,
    *,
    public_key: bytes,
    bundles_dir: Path,
    current_version: int | None = None,
    chunk_bytes: int = DOWNLOAD_CHUNK_BYTES,
    progress: Progress | None = None,
) -> BundleUpdate:
    """Install and activate the server's latest bundle if it is newer and verifies (module
    docstring). Raises :class:`SyncUnavailableError`/:class:`SyncAuthError`/:class:`SyncError`
    for transport problems (nothing activated); a bundle that fails a check is reported as
    ``"rejected"``, not raised."""
    response = retrier.call(lambda: client.request("GET", LATEST_PATH), what="latest bundle")
    if response.status == 404:
        return BundleUpdate("none_published")
    _raise_for_status(response.status, response.error_text(), "latest bundle")
    try:
        manifest_bytes, signature, advertised = _decode_latest(response.body)
        verify_signature(public_key, manifest_bytes, signature)
        version = _signed_version(manifest_bytes)
        if version != advertised:
            raise BundleRejectedError(
                f"the server advertises version {advertised} for a manifest of version {version}"
            )
        failed = _failed_record(store, version)
        if failed is not None:
            return BundleUpdate("failed_before", version, reason=failed)
        installed = installed_version(store, current_version)
        if installed is not None and version <= installed:
            if version == installed:
                return BundleUpdate("up_to_date", version)
            raise BundleRejectedError(
                f"version {version} is older than the installed {installed} (no rollback)"
            )
    except (BundleRejectedError, BundleError) as exc:
        return BundleUpdate("rejected", reason=str(exc))
    try:
        path = _install(
            store, client, retrier, manifest_bytes, version, bundles_dir, chunk_bytes, progress
        )
    except (BundleRejectedError, BundleError) as exc:
        shutil.rmtree(bundles_dir / f".incoming-v{version}", ignore_errors=True)
        return BundleUpdate("rejected", version, reason=str(exc))
    return BundleUpdate("installed", version, path)


def _failed_record(store: Store, version: int) -> str | None:
    """The recorded failure of ``version``, or ``None`` if it did not fail before."""
    record = next((r for r in store.installed_bundles() if r.model_version == version), None)
    if record is None or record.good:
        return None
    return record.failure or "failed before"


def _raise_for_status(status: int, text: str, what: str) -> None:
    if status in (401, 403):
        raise SyncAuthError(f"{what} refused: {text}")
    if not 200 <= status < 300:
        raise SyncError(f"{what}: {text}")


def _decode_latest(body: bytes) -> tuple[bytes, bytes, int]:
    try:
        raw = json.loads(body)
        manifest = base64.b64decode(raw["manifest"], validate=True)
        signature = base64.b64decode(raw["signature"], validate=True)
        advertised = raw["model_version"]
    except (ValueError, KeyError, TypeError) as exc:
        problem = f"the server's latest-bundle reply is malformed ({exc})"
        raise BundleRejectedError(problem) from None
    if not isinstance(advertised, int) or len(manifest) > MAX_MANIFEST_BYTES:
        raise BundleRejectedError("the server's latest-bundle reply is malformed")
    return manifest, signature, advertised


def _signed_version(manifest_bytes: bytes) -> int:
    """The model version of a manifest whose signature has been verified."""
    try:
        version = json.loads(manifest_bytes)["model_version"]
    except (ValueError, KeyError, TypeError):
        raise BundleRejectedError("the signed manifest is not a bundle manifest") from None
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise BundleRejectedError(f"the signed manifest's model_version is {version!r}")
    return version


def _install(
    store: Store,
    client: HttpClient,
    retrier: Retrier,
    manifest_bytes: bytes,
    version: int,
    bundles_dir: Path,
    chunk_bytes: int,
    progress: Progress | None,
) -> Path:
    bundles_dir = bundles_dir.resolve()
    bundles_dir.mkdir(parents=True, exist_ok=True)
    staging = bundles_dir / f".incoming-v{version}"
    final = bundles_dir / f"v{version}"
    staging.mkdir(exist_ok=True)
    (staging / MANIFEST).write_bytes(manifest_bytes)
    manifest = read_manifest(staging)  # schema check of the signed manifest
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    if not final.exists():
        for name, entry in manifest.files.items():
            _fetch(client, retrier, staging, version, name, entry.bytes, chunk_bytes, progress)
            _check_file(staging / name, name, entry.bytes, entry.sha256)
        _verify_staged(staging, manifest)
        _report(progress, "verified", version)
        _prove(store, staging, final, version, digest)
        _report(progress, "proven", version)
        install_directory(staging, final)
        _report(progress, "renamed", version)
    else:  # renamed before a crash, not recorded yet: check it again before using it
        _verify_staged(final, manifest)
        if (final / MANIFEST).read_bytes() != manifest_bytes:
            raise BundleRejectedError(f"{final} holds another manifest than the signed one")
        _prove(store, final, final, version, digest)
        shutil.rmtree(staging, ignore_errors=True)
    store.add_bundle(version, final, digest, activate=True)
    _report(progress, "recorded", version)
    return final


def _prove(store: Store, folder: Path, final: Path, version: int, digest: str) -> None:
    """Open and exercise the bundle in ``folder`` (``open_bundle``); on failure record
    ``version`` as failed (``final`` is where it would have gone) and re-raise."""
    try:
        open_bundle(folder)
    except BundleError as exc:
        store.mark_bundle_failed(version, final, digest, reason=str(exc))
        raise


def _fetch(
    client: HttpClient,
    retrier: Retrier,
    staging: Path,
    version: int,
    name: str,
    size: int,
    chunk_bytes: int,
    progress: Progress | None,
) -> None:
    """Download ``name`` into ``staging`` (resuming ``name.part``), renamed once complete."""
    done = staging / name
    if done.is_file() and done.stat().st_size == size:
        return
    part = staging / f"{name}.part"
    stage = f"download:{name}"

    def step(written: int) -> None:
        _report(progress, stage, written)

    for _round in range(retrier.policy.max_attempts):
        response = retrier.call(
            lambda: client.download(
                file_path(version, name), part, limit=size, chunk_bytes=chunk_bytes, progress=step
            ),
            what=f"download {name}",
        )
        have = part.stat().st_size if part.exists() else 0
        if response.status == 416 or (200 <= response.status < 300 and have >= size):
            break
        if not 200 <= response.status < 300:
            _raise_for_status(response.status, response.error_text(), f"download {name}")
    else:
        raise SyncError(f"download {name}: the connection kept dropping")
    os.replace(part, done)


def _check_file(path: Path, name: str, size: int, sha256: str) -> None:
    actual = path.stat().st_size
    if actual != size or sha256_file(path) != sha256:
        path.unlink()
        what = (
            f"{actual} bytes, the signed manifest says {size}"
            if actual != size
            else ("SHA-256 does not match the signed manifest")
        )
        raise BundleRejectedError(f"file {name!r}: {what}")


def _verify_staged(folder: Path, signed: Manifest) -> None:
    manifest = verify_bundle(folder)
    if manifest != signed:
        raise BundleRejectedError(f"{folder}: the verified manifest differs from the signed one")
    extra = sorted(
        p.name for p in folder.iterdir() if p.name != MANIFEST and p.name not in signed.files
    )
    if extra:
        raise BundleRejectedError(f"{folder}: unexpected files {extra}")


def _report(progress: Progress | None, stage: str, amount: int) -> None:
    if progress is not None:
        progress(stage, amount)
