"""The on-device bundle: a directory the converter writes and the runtime verifies and loads.

Files (all listed in ``manifest.json`` with their byte length and SHA-256):

- ``step.tflite``: the step model, one signature ``step``: inputs ``item`` int32 ``[1, 1]``,
  ``event`` int32 ``[1, 1]``, ``state`` float32 ``[1, H]``; outputs ``state`` float32 ``[1, H]``
  and ``user`` float32 ``[1, D + 1]``. Built-in TFLite ops only.
- The catalog, as the device ranks it: ``catalog.npy`` float32 ``[N, D + 1]`` (item bias folded
  in as the last column), or for an int8 catalog ``catalog_int8_codes.npy`` int8 ``[N, D + 1]``
  and ``catalog_int8_scales.npy`` float32 ``[N]`` (see ``pocketrec.native.int8``).
- ``initial_user.npy``: float32 ``[D + 1]``, the user vector of a user with no events.
- ``items.json``: external item ids in index order (an ``IdMap``); ``item_titles.json`` (optional):
  a list of titles (or null) in the same order.

``manifest.json`` fields: ``format`` ("pocketrec-bundle"), ``format_version`` (1),
``model_version`` (an integer that only goes up), ``created_at`` (ISO 8601 UTC),
``state_dim`` (H), ``user_dim`` (D + 1), ``num_items`` (N), ``event_types`` (names in code order),
``model_dtype`` (float32 | float16 | int8), ``catalog_dtype`` (float32 | int8), ``files``, and
``metrics`` (validation metrics of the bundle as shipped, plus whatever the converter reports).

Verification (:func:`verify_bundle`) checks the manifest's schema, every file's length and
SHA-256, and the shapes and dtypes in the ``.npy`` headers (and that the data after each header
is exactly as long as they say) *before* anything is loaded; any problem raises
:class:`BundleError` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pocketrec.core.errors import BundleError
from pocketrec.core.events import EVENT_NAMES

FORMAT = "pocketrec-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STEP_MODEL = "step.tflite"
CATALOG = "catalog.npy"
CATALOG_INT8_CODES = "catalog_int8_codes.npy"
CATALOG_INT8_SCALES = "catalog_int8_scales.npy"
INITIAL_USER = "initial_user.npy"
ITEMS = "items.json"
ITEM_TITLES = "item_titles.json"
MODEL_DTYPES = ("float32", "float16", "int8")
CATALOG_DTYPES = ("float32", "int8")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    """Length in bytes and hex SHA-256 of one bundle file."""

    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json`` (see the module docstring for the fields)."""

    model_version: int
    created_at: str
    state_dim: int
    user_dim: int
    num_items: int
    model_dtype: str
    catalog_dtype: str
    files: dict[str, FileEntry]
    event_types: list[str] = field(default_factory=lambda: list(EVENT_NAMES))
    metrics: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_sha256(bundle_dir: Path) -> str:
    """Hex SHA-256 of the bundle's ``manifest.json`` bytes (what the store records and the
    server signs); ``BundleError`` if it cannot be read."""
    path = Path(bundle_dir) / MANIFEST
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def file_entry(path: Path) -> FileEntry:
    """The manifest entry of an existing file."""
    return FileEntry(bytes=path.stat().st_size, sha256=sha256_file(path))


def _require(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in raw:
        raise BundleError(f"{where}: missing field {key!r}")
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BundleError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def read_manifest(bundle_dir: Path) -> Manifest:
    """Parse and schema-check ``manifest.json`` (files are not checked here)."""
    if Path(bundle_dir).is_file():
        raise BundleError(f"{bundle_dir}: is a file; a bundle is a folder (pocketrec convert)")
    path = Path(bundle_dir) / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: no manifest (is this a bundle directory?)") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{path}: the manifest must be a JSON object")
    if raw.get("format") != FORMAT:
        raise BundleError(f"{path}: not a pocketrec bundle (format={raw.get('format')!r})")
    version = _require(raw, "format_version", int, path)
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {version} is not supported (this build reads "
            f"{FORMAT_VERSION})"
        )
    files_raw = _require(raw, "files", dict, path)
    files: dict[str, FileEntry] = {}
    for name, entry in files_raw.items():
        if not isinstance(entry, dict) or "/" in name or "\\" in name or name.startswith("."):
            raise BundleError(f"{path}: bad file entry {name!r}")
        size, digest = entry.get("bytes"), entry.get("sha256")
        if not isinstance(size, int) or not isinstance(digest, str) or len(digest) != 64:
            raise BundleError(f"{path}: bad length or sha256 for {name!r}")
        files[name] = FileEntry(bytes=size, sha256=digest)
    manifest = Manifest(
        model_version=_require(raw, "model_version", int, path),
        created_at=_require(raw, "created_at", str, path),
        state_dim=_require(raw, "state_dim", int, path),
        user_dim=_require(raw, "user_dim", int, path),
        num_items=_require(raw, "num_items", int, path),
        model_dtype=_require(raw, "model_dtype", str, path),
        catalog_dtype=_require(raw, "catalog_dtype", str, path),
        event_types=_require(raw, "event_types", list, path),
        metrics=_require(raw, "metrics", dict, path),
        files=files,
    )
    if manifest.model_dtype not in MODEL_DTYPES:
        raise BundleError(f"{path}: unknown model_dtype {manifest.model_dtype!r}")
    if manifest.catalog_dtype not in CATALOG_DTYPES:
        raise BundleError(f"{path}: unknown catalog_dtype {manifest.catalog_dtype!r}")
    if manifest.event_types != list(EVENT_NAMES)[: len(manifest.event_types)]:
        raise BundleError(f"{path}: event types {manifest.event_types} do not match this build's")
    return manifest


def required_files(manifest: Manifest) -> list[str]:
    """The files a bundle with this manifest must contain."""
    names = [STEP_MODEL, INITIAL_USER, ITEMS]
    if manifest.catalog_dtype == "int8":
        return [*names, CATALOG_INT8_CODES, CATALOG_INT8_SCALES]
    return [*names, CATALOG]


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """Shape, dtype and the header's length in bytes of a ``.npy`` file."""
    try:
        with path.open("rb") as fh:
            major, _minor = np.lib.format.read_magic(fh)
            if major == 1:
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            header_bytes = fh.tell()
    except ValueError as exc:
        raise BundleError(f"{path}: not a valid .npy file ({exc})") from None
    if fortran:
        raise BundleError(f"{path}: array is Fortran-ordered; expected C order")
    return tuple(shape), dtype, header_bytes


def _check_npy(path: Path, shape: tuple[int, ...], dtype: str) -> None:
    got_shape, got_dtype, header_bytes = _npy_header(path)
    if got_shape != shape or got_dtype != np.dtype(dtype):
        raise BundleError(
            f"{path}: expected {dtype} {list(shape)}, found {got_dtype} {list(got_shape)}"
        )
    data_bytes = path.stat().st_size - header_bytes
    expected = int(np.prod(shape, dtype=np.int64)) * got_dtype.itemsize
    if data_bytes != expected:
        raise BundleError(f"{path}: {data_bytes} bytes of data, its header needs {expected}")


def verify_bundle(bundle_dir: Path) -> Manifest:
    """Check the whole bundle before anything is loaded; returns the manifest or raises."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    for name in required_files(manifest):
        if name not in manifest.files:
            raise BundleError(f"{bundle_dir / MANIFEST}: required file {name!r} is not listed")
    for name, entry in manifest.files.items():
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != entry.bytes:
            raise BundleError(f"{path}: {size} bytes, the manifest says {entry.bytes}")
        if sha256_file(path) != entry.sha256:
            raise BundleError(f"{path}: SHA-256 does not match the manifest (corrupted or altered)")
    n, d = manifest.num_items, manifest.user_dim
    _check_npy(bundle_dir / INITIAL_USER, (d,), "float32")
    if manifest.catalog_dtype == "int8":
        _check_npy(bundle_dir / CATALOG_INT8_CODES, (n, d), "int8")
        _check_npy(bundle_dir / CATALOG_INT8_SCALES, (n,), "float32")
    else:
        _check_npy(bundle_dir / CATALOG, (n, d), "float32")
    return manifest
