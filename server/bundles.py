"""Published bundles on the server: files in ``DIR/versions/<model_version>/``, metadata in the
server database.

Each version directory holds the bundle's files, ``manifest.json`` (exactly as the converter
wrote it) and ``manifest.sig`` (the raw 64-byte Ed25519 signature of the manifest's bytes);
``DIR/LATEST`` holds the latest version number. The database (``FeedbackStorage.record_bundle``)
records each published version with its manifest's SHA-256, the signature and the time: it says
which versions are published and which is the latest, so several server processes (or hosts
sharing the folder) agree. Publishing copies into a temporary directory, fsyncs, renames it into
place, records the version in the database and then replaces ``LATEST`` atomically, so the server
never offers a partial bundle; model versions only go up. A manifest whose bytes no longer match
the recorded SHA-256 is refused (``BundleError``) rather than served.

A folder published before the database kept bundles (``LATEST`` but no recorded version) is
adopted when the repository is opened: its complete versions up to ``LATEST`` are recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pocketrec.core.bundle import MANIFEST, read_manifest, verify_bundle
from pocketrec.core.errors import BundleError
from pocketrec.core.files import install_directory, write_atomic
from pocketrec.server.signing import sign
from pocketrec.server.storage import BundleRecord, FeedbackStorage

SIGNATURE = "manifest.sig"
LATEST = "LATEST"


@dataclass(frozen=True)
class PublishedBundle:
    """A published version: the manifest's exact bytes and their signature."""

    model_version: int
    manifest: bytes
    signature: bytes
    path: Path


class BundleRepository:
    """The bundles under ``root`` (created on first publish), recorded in ``storage``."""

    def __init__(self, root: str | os.PathLike[str], storage: FeedbackStorage) -> None:
        self.root = Path(root)
        self.storage = storage
        self._adopt_folder()

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    def publish(
        self, bundle_dir: str | os.PathLike[str], key: Ed25519PrivateKey
    ) -> PublishedBundle:
        """Verify ``bundle_dir``, sign its manifest and make it the latest version.

        Raises ``BundleError`` for a bundle that does not verify and ``ValueError`` when its
        model version is not greater than the latest published one (nothing is changed then).
        """
        source = Path(bundle_dir)
        manifest = verify_bundle(source)
        version = manifest.model_version
        latest = self.latest_version()
        if latest is not None and version <= latest:
            raise ValueError(
                f"model_version {version} is not newer than the latest published {latest}; "
                "model versions only go up"
            )
        manifest_bytes = (source / MANIFEST).read_bytes()
        signature = sign(key, manifest_bytes)
        target = self.versions_dir / str(version)
        staging = self.versions_dir / f".{version}.partial"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        for name in [MANIFEST, *manifest.files]:
            shutil.copyfile(source / name, staging / name)
        (staging / MANIFEST).write_bytes(manifest_bytes)
        (staging / SIGNATURE).write_bytes(signature)
        # replace: an earlier publish of this unrecorded version crashed before recording it
        install_directory(staging, target, replace=True)
        self.storage.record_bundle(
            BundleRecord(version, _sha256(manifest_bytes), signature, time.time())
        )
        write_atomic(self.root / LATEST, f"{version}\n".encode("ascii"))
        published = self.get(version)
        assert published is not None
        return published

    def latest_version(self) -> int | None:
        """The latest published model version, or ``None``."""
        record = self.storage.latest_bundle()
        return None if record is None else record.model_version

    def latest(self) -> PublishedBundle | None:
        """The latest published bundle, or ``None``."""
        record = self.storage.latest_bundle()
        return None if record is None else self._published(record)

    def get(self, version: int) -> PublishedBundle | None:
        """The published bundle ``version``, or ``None``."""
        record = self.storage.bundle(version)
        return None if record is None else self._published(record)

    def file_path(self, version: int, name: str) -> Path | None:
        """The file ``name`` of the published version ``version`` if the manifest lists it (or
        it is the manifest itself), else ``None``; never a path outside the version directory."""
        if self.storage.bundle(version) is None:
            return None
        folder = self.versions_dir / str(version)
        if not (folder / MANIFEST).is_file():
            return None
        if name != MANIFEST and name not in read_manifest(folder).files:
            return None
        return folder / name

    def _published(self, record: BundleRecord) -> PublishedBundle:
        folder = self.versions_dir / str(record.model_version)
        try:
            manifest = (folder / MANIFEST).read_bytes()
        except FileNotFoundError:
            raise BundleError(
                f"{folder / MANIFEST}: missing, but version {record.model_version} is recorded "
                "as published"
            ) from None
        if _sha256(manifest) != record.manifest_sha256:
            raise BundleError(
                f"{folder / MANIFEST}: its SHA-256 is not the one recorded when version "
                f"{record.model_version} was published (changed on disk?)"
            )
        return PublishedBundle(record.model_version, manifest, record.signature, folder)

    def _adopt_folder(self) -> None:
        """Record the versions of a folder published before the database kept bundles."""
        if self.storage.latest_bundle() is not None:
            return
        try:
            latest = int((self.root / LATEST).read_text(encoding="ascii").strip())
        except (FileNotFoundError, ValueError):
            return
        if not self.versions_dir.is_dir():
            return
        versions = sorted(int(p.name) for p in self.versions_dir.iterdir() if p.name.isdigit())
        for version in versions:
            folder = self.versions_dir / str(version)
            if version > latest or not (folder / SIGNATURE).is_file():
                continue  # a publish that crashed before LATEST named it
            manifest = (folder / MANIFEST).read_bytes()
            record = BundleRecord(
                version, _sha256(manifest), (folder / SIGNATURE).read_bytes(),
                (folder / SIGNATURE).stat().st_mtime,
            )  # fmt: skip
            with contextlib.suppress(ValueError):  # another process adopted it first
                self.storage.record_bundle(record)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
