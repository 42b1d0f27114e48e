"""Published bundles on the server: ``DIR/versions/<model_version>/`` and ``DIR/LATEST``.

Each version directory holds the bundle's files, ``manifest.json`` (exactly as the converter
wrote it) and ``manifest.sig`` (the raw 64-byte Ed25519 signature of the manifest's bytes).
``LATEST`` holds the latest version number. Publishing copies into a temporary directory, fsyncs,
renames it into place and then replaces ``LATEST`` atomically, so the server never offers a
partial bundle; model versions only go up.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pocketrec.core.bundle import MANIFEST, read_manifest, verify_bundle
from pocketrec.core.files import install_directory, write_atomic
from pocketrec.server.signing import sign

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
    """The bundles under ``root`` (created on first publish)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    def publish(
        self, bundle_dir: str | os.PathLike[str], key: Ed25519PrivateKey
    ) -> PublishedBundle:
        """Verify ``bundle_dir``, sign its manifest and make it the latest version.

        Raises ``BundleError`` for a bundle that does not verify and ``ValueError`` when its
        model version is not greater than the latest published one.
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
        target = self.versions_dir / str(version)
        staging = self.versions_dir / f".{version}.partial"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        for name in [MANIFEST, *manifest.files]:
            shutil.copyfile(source / name, staging / name)
        (staging / MANIFEST).write_bytes(manifest_bytes)
        (staging / SIGNATURE).write_bytes(sign(key, manifest_bytes))
        # replace: an earlier publish of this version crashed before LATEST named it
        install_directory(staging, target, replace=True)
        write_atomic(self.root / LATEST, f"{version}\n".encode("ascii"))
        published = self.get(version)
        assert published is not None
        return published

    def latest_version(self) -> int | None:
        """The latest published model version, or ``None``."""
        try:
            return int((self.root / LATEST).read_text(encoding="ascii").strip())
        except FileNotFoundError:
            return None

    def latest(self) -> PublishedBundle | None:
        """The latest published bundle, or ``None``."""
        version = self.latest_version()
        return None if version is None else self.get(version)

    def get(self, version: int) -> PublishedBundle | None:
        """The published bundle ``version``, or ``None``."""
        folder = self.versions_dir / str(version)
        try:
            manifest = (folder / MANIFEST).read_bytes()
            signature = (folder / SIGNATURE).read_bytes()
        except FileNotFoundError:
            return None
        return PublishedBundle(version, manifest, signature, folder)

    def file_path(self, version: int, name: str) -> Path | None:
        """The file ``name`` of version ``version`` if the manifest lists it (or it is the
        manifest itself), else ``None``; never a path outside the version directory."""
        folder = self.versions_dir / str(version)
        if not (folder / MANIFEST).is_file():
            return None
        if name != MANIFEST and name not in read_manifest(folder).files:
            return None
        return folder / name
